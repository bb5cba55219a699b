"""The package's layering rules, checked on the source: no import cycles, argparse only in the CLI, sizes.

Imports are read with `ast` (module-level and function-level alike), so a lazy import that
would close a cycle counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gpunet"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The gpunet modules `path` imports (`from gpunet.x import y` counts as gpunet.x.y when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gpunet"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gpunet"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules}


def _with_packages(module: str, importer: str, modules: set[str]) -> set[str]:
    """`module` and the packages whose `__init__` Python runs to import it (those outside `importer`'s own)."""
    parts = module.split(".")
    found = {module}
    for i in range(2, len(parts)):
        package = ".".join(parts[:i])
        if package in modules and not importer.startswith(package + ".") and importer != package:
            found.add(package)
    return found


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    modules = set(sources)
    graph = {}
    for m, p in sources.items():
        if m == "gpunet":  # the package's face imports everything; `gpunet.x` needs only gpunet/__init__'s imports
            continue
        deps = set().union(*(_with_packages(d, m, modules) for d in _imports(p, modules)))
        # a package's __init__ re-exporting its own modules is its face, not a dependency of theirs
        graph[m] = {d for d in deps if d != m and not m.startswith(d + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_argparse_only_in_the_cli() -> None:
    offenders = [m for m, p in _sources().items() if not m.startswith("gpunet.cli")
                 and any(isinstance(n, (ast.Import, ast.ImportFrom)) and "argparse" in
                         ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""])
                         for n in ast.walk(ast.parse(p.read_text())))]
    assert offenders == []


@pytest.mark.parametrize("module", sorted(_sources()))
def test_module_and_function_sizes(module: str) -> None:
    path = _sources()[module]
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{path}: {text.count(chr(10))} lines"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno is not None
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"{path}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_library_has_no_process_wide_side_effects_in_source() -> None:
    """matplotlib's backend is never switched by the library (plots are drawn on Figure objects)."""
    offenders = [m for m, p in _sources().items() if "matplotlib.use(" in p.read_text()]
    assert offenders == []
