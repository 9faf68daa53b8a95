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
