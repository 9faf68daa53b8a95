"""Class names (and colours) of label masks, recorded in the mask file itself.

A label mask (uint8 class values, :func:`~monai_shf.slide.write_slide_mask`, the label slide of
:func:`~monai_shf.data.make_slide`) says what its values mean in one line of the ImageDescription of
its first page (level 0)::

    monai_shf classes: {"0": {"name": "background"}, "1": {"name": "tumour", "color": [200, 0, 0]}}

JSON, keys the label values as strings, ``color`` optional (``[r, g, b]``, 0..255). Other lines of the
description are free text. :func:`~monai_shf.slide.mask_to_geojson` names its annotations from this
record; a mask without one needs the names passed explicitly. numpy + tifffile only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CLASS_RECORD_PREFIX",
    "DEFAULT_COLORS",
    "normalize_classes",
    "class_color",
    "class_record",
    "read_class_record",
]

CLASS_RECORD_PREFIX = "monai_shf classes: "
"""Start of the description line holding the class record."""

DEFAULT_COLORS = (
    (128, 128, 128),
    (200, 0, 0),
    (0, 150, 0),
    (0, 0, 200),
    (230, 160, 0),
    (150, 0, 150),
    (0, 160, 160),
    (120, 70, 20),
    (255, 105, 180),
    (90, 90, 0),
)
"""Colour of label ``v`` when none is given: ``DEFAULT_COLORS[v % 10]`` (label 0, the background, grey)."""

Classes = dict[int, tuple[str, "tuple[int, int, int] | None"]]


def normalize_classes(classes: Any, name: str = "classes") -> Classes:
    """``classes`` as ``{label value: (name, (r, g, b) or None)}``, checked.

    Args:
        classes: a mapping ``{value: name}``, ``{value: (name, (r, g, b))}`` or ``{value: {"name": ...,
            "color": [r, g, b]}}`` (values ints in ``[0, 255]``, or their decimal strings as JSON has
            them); or a sequence of names, the name of label ``i`` at index ``i`` (index 0: background).
        name: the parameter name used in error messages.

    Raises:
        TypeError, ValueError: naming ``name`` and the offending entry.
    """
    if isinstance(classes, Mapping):
        items = list(classes.items())
    elif isinstance(classes, Sequence) and not isinstance(classes, (str, bytes)):
        items = list(enumerate(classes))
    else:
        raise TypeError(
            f"{name} must map label values to names (e.g. {{1: 'tumour'}}) or list the names of labels "
            f"0, 1, 2, ..., got {type(classes).__name__}."
        )
    if not items:
        raise ValueError(f"{name} is empty: give the name of at least one label value.")
    out: Classes = {}
    for key, entry in items:
        value = _label_value(key, name)
        color = None
        if isinstance(entry, Mapping):
            label_name, color = entry.get("name"), entry.get("color")
        elif isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str):
            label_name, color = entry
        else:
            label_name = entry
        if not isinstance(label_name, str) or not label_name.strip():
            raise ValueError(f"{name}[{value}] must be a non-empty class name, got {label_name!r}.")
        if value in out:
            raise ValueError(f"{name} names label {value} twice.")
        out[value] = (label_name, None if color is None else _color(color, f"{name}[{value}] color"))
    return out


def _label_value(key: Any, name: str) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= int(key) <= 255:
        raise ValueError(f"{name}: label values must be integers in [0, 255] (uint8 masks), got {key!r}.")
    return int(key)


def _color(color: Any, name: str) -> tuple[int, int, int]:
    try:
        values = tuple(color)
    except TypeError:
        values = ()
    if len(values) != 3 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255 for v in values
    ):
        raise ValueError(f"{name} must be three integers (r, g, b) in [0, 255], got {color!r}.")
    return int(values[0]), int(values[1]), int(values[2])


def class_color(value: int, color: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """``color``, or label ``value``'s :data:`DEFAULT_COLORS` entry when it is ``None``."""
    return color if color is not None else DEFAULT_COLORS[value % len(DEFAULT_COLORS)]


def class_record(classes: Any, name: str = "classes") -> str:
    """The description line recording ``classes`` (anything :func:`normalize_classes` takes)."""
    record = {}
    for value, (label_name, color) in sorted(normalize_classes(classes, name).items()):
        record[str(value)] = {"name": label_name} if color is None else {"name": label_name, "color": list(color)}
    return CLASS_RECORD_PREFIX + json.dumps(record)  # ASCII, as TIFF strings must be: other names are escaped


def read_class_record(path: str | os.PathLike) -> Classes | None:
    """The class record of the TIFF ``path`` (first page's ImageDescription), or ``None`` when the file
    is not a TIFF or records no classes. A record that does not parse is a ``ValueError`` naming the file."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            description = tif.pages.first.description or ""
    except (OSError, ValueError, tifffile.TiffFileError):  # not a TIFF: no record; opening it reports why
        return None
    for line in description.splitlines():
        if line.startswith(CLASS_RECORD_PREFIX):
            try:
                return normalize_classes(json.loads(line[len(CLASS_RECORD_PREFIX) :]), "class record")
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"{os.fspath(path)}: unreadable class record in its ImageDescription ({error})."
                ) from None
    return None
