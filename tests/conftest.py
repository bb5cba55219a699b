"""Shared fixtures: the read-only NVIDIA reference folder (../shared/reference), skipped when absent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """The reference folder (configs/, state_dict/, models.json, golden/); skips the test if absent."""
    if not (REFERENCE_DIR / "models.json").is_file():
        pytest.skip(f"reference folder not available at {REFERENCE_DIR}")
    return REFERENCE_DIR.resolve()


@pytest.fixture(scope="session")
def reference_models(shared_reference: Path) -> dict[str, dict[str, Any]]:
    """models.json's per-model facts, by model id."""
    return json.loads((shared_reference / "models.json").read_text())["models"]


@pytest.fixture(scope="module")
def single_thread_torch():
    """Run a module's tests with one intra-op thread (restored afterwards).

    The 2 CPU cores are shared with other jobs; torch's spinning OpenMP threads then make
    small CPU forwards several times slower than with one thread. Opt in with
    `pytestmark = pytest.mark.usefixtures("single_thread_torch")`.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
