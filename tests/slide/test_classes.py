"""Tests of monai_shf.slide.classes: class names recorded in label masks."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from monai_shf.slide.classes import (
    CLASS_RECORD_PREFIX,
    DEFAULT_COLORS,
    class_color,
    class_record,
    normalize_classes,
    read_class_record,
)


def test_normalize_classes_forms():
    assert normalize_classes(["bg", "tumour"]) == {0: ("bg", None), 1: ("tumour", None)}
    assert normalize_classes({2: "stroma", "1": ("tumour", [255, 0, 0])}) == {
        2: ("stroma", None),
        1: ("tumour", (255, 0, 0)),
    }
    assert normalize_classes({"3": {"name": "x", "color": [1, 2, 3]}}) == {3: ("x", (1, 2, 3))}
    assert class_color(1, None) == DEFAULT_COLORS[1] and class_color(1, (9, 9, 9)) == (9, 9, 9)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ("tumour", TypeError, "classes must map"),
        ({}, ValueError, "empty"),
        ({256: "x"}, ValueError, r"\[0, 255\]"),
        ({True: "x"}, ValueError, r"\[0, 255\]"),
        ({1: ""}, ValueError, "non-empty class name"),
        ({1: ("x", (1, 2))}, ValueError, "three integers"),
        ({1: "a", "1": "b"}, ValueError, "twice"),
    ],
)
def test_normalize_classes_rejects(bad, error, match):
    with pytest.raises(error, match=match):
        normalize_classes(bad)


def test_record_round_trip(tmp_path):
    record = class_record({0: "background", 1: ("tümour", (200, 0, 0))})
    assert record.startswith(CLASS_RECORD_PREFIX) and "\n" not in record
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), description=f"some text\n{record}")
    assert read_class_record(path) == {0: ("background", None), 1: ("tümour", (200, 0, 0))}
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((8, 8), np.uint8), description="no record")
    assert read_class_record(tmp_path / "plain.tif") is None
    (tmp_path / "text.tif").write_text("not a tiff")
    assert read_class_record(tmp_path / "text.tif") is None
    tifffile.imwrite(tmp_path / "bad.tif", np.zeros((8, 8), np.uint8), description=CLASS_RECORD_PREFIX + "{1: x")
    with pytest.raises(ValueError, match=r"bad\.tif: unreadable class record"):
        read_class_record(tmp_path / "bad.tif")
