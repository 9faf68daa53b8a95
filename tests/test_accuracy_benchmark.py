"""benchmarks/accuracy.py: the equal-compute harness in a tiny configuration (the format, not the results)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2 as cv
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def accuracy():
    path = ROOT / "benchmarks" / "accuracy.py"
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["accuracy_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def _pair(tmp_path: Path, spatial_dims: int) -> tuple[Path, Path]:
    """A small image of bright discs (2D) or balls (3D) and its label, as .npy files."""
    rng = np.random.default_rng(0)
    shape = (64, 64) if spatial_dims == 2 else (32, 32, 32)
    grid = np.indices(shape)
    label = np.zeros(shape, np.uint8)
    for _ in range(8):
        centre = rng.integers(4, np.array(shape) - 4)
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre)) < 16
        label[inside] = 1
    image = (label * 200 + rng.normal(20, 5, shape)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "label.npy", label)
    return tmp_path / "image.npy", tmp_path / "label.npy"


def test_tiny_run_writes_a_table_a_png_and_json(accuracy, tmp_path):
    image, label = _pair(tmp_path, 2)
    out = tmp_path / "out"
    argv = ["--image", str(image), "--label", str(label), "--quick", "--budget", "0.01", "--evals", "1"]
    assert accuracy.main([*argv, "--jobs", "0", "--output-dir", str(out)]) == 0
    table = (out / "image.npy.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == len(accuracy.METHODS)
    header = [
        c.strip() for c in table[table.index(next(t for t in table if t.startswith("| method")))].split("|")[1:-1]
    ]
    for row in rows:
        cells = dict(zip(header, (c.strip() for c in row.split("|")[1:-1])))
        assert int(cells["steps"]) >= 1
        assert 0.0 <= float(cells["held-out Dice"]) <= 1.0
        assert 0.0 < float(cells["upper bound"]) <= 1.0
    png = cv.imread(str(out / "image.npy.png"))
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 100
    assert (png != 255).any(), "the chart is blank"
    results = json.loads((out / "results.json").read_text())["results"]["image.npy"]
    assert [r["method"] for r in results] == list(accuracy.METHODS)
    by_method = {r["method"]: r for r in results}
    # full-resolution p x p tokens and the image methods lose nothing by construction
    assert by_method["grid_full"]["upper_bound"] == 1.0 and by_method["unet"]["upper_bound"] == 1.0
    assert by_method["shf"]["pixels_per_sample"] == by_method["grid_l"]["pixels_per_sample"]
    assert by_method["grid_full"]["pixels_per_sample"] == 64 * 32
    assert all(r["curve"] and r["cpu_s"] >= 0.01 for r in results)


def test_3d_pair_with_a_subset_of_methods(accuracy, tmp_path):
    image, label = _pair(tmp_path, 3)
    out = tmp_path / "out3d"
    argv = ["--image", str(image), "--label", str(label), "--spatial-dims", "3", "--quick", "--budget", "0.01"]
    assert (
        accuracy.main(
            [
                *argv,
                "--evals",
                "1",
                "--methods",
                "shf",
                "grid_l",
                "--jobs",
                "0",
                "--output-dir",
                str(out),
                "--save-weights",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())["results"]["image.npy"]
    # --save-weights: each method's final state dict, loadable as data
    import torch

    for method in ("shf", "grid_l"):
        state = torch.load(out / "weights" / f"image.npy_{method}.pt", weights_only=True)
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    assert not list((out / "weights").glob(".*"))  # no temporary left behind
    assert [r["method"] for r in results] == ["shf", "grid_l"]
    assert all(0.0 <= r["dice"] <= 1.0 for r in results)


def test_split_and_grid_forest(accuracy):
    image = np.arange(2 * 40 * 30, dtype=np.float32).reshape(2, 40, 30)
    label = (image[:1] > 1000).astype(np.uint8)
    case = accuracy.split_case("x", image, label, axis=1, num_classes=2)
    assert case.train_image.shape == case.val_image.shape == (2, 48, 16)  # halves of 15 columns, padded to 16
    assert np.array_equal(case.train_image[:, :40, :15], image[:, :, :15])
    assert np.array_equal(case.val_image[:, :40, :15], image[:, :, 15:])
    forest = accuracy.grid_forest((16, 24), 8)
    assert forest.num_leaves == 6 and (forest.sizes == 8).all()
    with pytest.raises(ValueError, match="divisible"):
        accuracy.grid_forest((16, 20), 8)
    with pytest.raises(ValueError, match="split axis"):
        accuracy.split_case("x", image, label, axis=2, num_classes=2)


def test_bad_arguments_are_refused(accuracy, tmp_path):
    with pytest.raises(SystemExit):
        accuracy.main(["--image", str(tmp_path / "a.npy")])  # --label missing
    image, label = _pair(tmp_path, 2)
    np.save(tmp_path / "many.npy", np.arange(64 * 64).reshape(64, 64))
    with pytest.raises(ValueError, match="--binarize"):
        accuracy.load_pair(image, tmp_path / "many.npy", 2, None, False)
    case = accuracy.load_pair(image, tmp_path / "many.npy", 2, None, True)
    assert case.num_classes == 2
