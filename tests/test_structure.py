"""The package's dependency rules: the geometry core and the slide core import without MONAI."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["monai_shf.forest", "monai_shf.slide", "monai_shf.volume", "monai_shf.bundles", "monai_shf.utils"]
)
def test_core_imports_without_monai(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'monai' or m.startswith('monai.')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{module} imports MONAI: {done.stdout.strip()[:300]}"


def test_no_library_module_refers_to_the_repository_layout():
    """No library code finds files through the checkout or a shared/ folder beside it."""
    from pathlib import Path

    import monai_shf

    root = Path(monai_shf.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        for needle in ("parents[1]", "parents[2]", '"shared"', "'shared'", "../shared"):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    assert offenders == []


def _package_imports(package: str, lazy: bool = True) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}``: module-level imports, and with ``lazy`` the
    imports inside functions too."""
    import ast
    import importlib
    from pathlib import Path

    root = Path(importlib.import_module(package).__file__).parent
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        name = path.stem
        targets = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree) if lazy else tree.body:
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    targets.add(node.module.split(".")[0])
                elif node.level == 1:
                    targets.update(alias.name for alias in node.names)
                elif node.module and node.module.startswith(f"{package}."):
                    targets.add(node.module[len(package) + 1 :].split(".")[0])
        graph[name] = targets - {name}
    return graph


@pytest.mark.parametrize("package", ["monai_shf.slide", "monai_shf.forest"])
def test_package_modules_import_one_way(package):
    """No import cycle between the modules of a package at import time (the package ``__init__`` aside). A
    function-level import that dispatches to an optional backend (the torch build of ``build_forest``) may
    point back up; the slide backends may not (next test)."""
    graph = {m: t - {"__init__"} for m, t in _package_imports(package, lazy=False).items() if m != "__init__"}
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(path + [target])
            elif target in graph and not state.get(target):
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])
    assert cycles == []


def test_slide_backends_sit_below_the_factory():
    graph = _package_imports("monai_shf.slide")
    assert graph["base"] <= {"__init__"}  # the interface imports no other slide module
    for backend in ("tiff_backend", "wsi_backend"):
        assert "reader" not in graph[backend] and "base" in graph[backend]
    assert {"base", "tiff_backend"} <= graph["reader"]
