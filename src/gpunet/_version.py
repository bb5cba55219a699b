"""The package version, importable without importing the package's heavy modules."""

__version__ = "0.1.0"
