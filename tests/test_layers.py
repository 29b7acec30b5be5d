"""The package's three layers import only downward: the core (everything at the top of `charlm`, with
`models`, `seq2seq` and `insight`) imports only the core; each job (`charlm.jobs.*`) the core alone, never
another job; tooling (`charlm.tooling`) the core and itself; the command line (`charlm.cli`) anything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "charlm"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def charlm_imports(path: Path) -> set[str]:
    """Every charlm module a file imports, at the top or inside a function (`from charlm import x` as charlm.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "charlm":
            found.add(node.module)
            if node.module == "charlm":
                found.update(f"charlm.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "charlm")
    return found


def layer(module: str) -> str:
    if module == "charlm.__main__":  # `python -m charlm`: a command
        return "cli"
    for name in ("jobs", "tooling", "cli"):
        if module == f"charlm.{name}" or module.startswith(f"charlm.{name}."):
            return name
    return "core"


MODULES = {module_name(p): charlm_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def allowed(importer: str, imported: str) -> bool:
    if layer(imported) == "core":
        return True
    if layer(importer) == "cli":
        return True
    if layer(importer) == "tooling":
        return layer(imported) == "tooling"
    if layer(importer) == "jobs":
        return imported == "charlm.jobs"  # the package's docstring, never another job
    return False


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_its_own_layer_or_below(module):
    upward = sorted(m for m in MODULES[module] if not allowed(module, m))
    assert not upward, f"{module} ({layer(module)}) imports {upward}"


def test_the_layers_hold_the_modules_the_layout_promises():
    assert {layer(m) for m in MODULES} == {"core", "jobs", "tooling", "cli"}
    assert {"charlm.jobs.train", "charlm.jobs.generate", "charlm.jobs.evaluate"} <= set(MODULES)
    assert {"charlm.cli.app", "charlm.cli.argv"} <= set(MODULES)


def test_a_job_importing_another_job_is_caught():
    assert not allowed("charlm.jobs.evaluate", "charlm.jobs.generate")
    assert not allowed("charlm.lightning_module", "charlm.tooling.sweep")
    assert not allowed("charlm.callbacks", "charlm.cli.argv")
