"""The string choices of monai_shf as string enums (no MONAI import: the forest and slide cores use them).

Each enum's members are ``str`` (``SerializeMode.AREA == "area"``), so configs, command lines and
keyword arguments keep passing plain strings. The geometry and slide cores check a choice with
:func:`monai_shf.validation.check_choice`; the MONAI-facing layers (transforms, inference, networks)
with MONAI's ``look_up_option`` through :func:`look_up` (the same check, naming the parameter). The
tuples of values (``SERIALIZE_MODES``, ``SPLIT_CRITERIA``, ...) that modules export are derived from
these enums.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = [
    "StrEnum",
    "SerializeMode",
    "DeserializeMode",
    "SplitCriterion",
    "FillMode",
    "EdgeKind",
    "EdgeMethod",
    "ChannelReduction",
    "SlideBackend",
    "Compression",
    "Photometric",
    "SegmentationType",
    "PretrainedSource",
    "DeviceKind",
    "values",
    "look_up",
]


class StrEnum(str, Enum):
    """A string enum whose ``str()`` is its value (as ``monai.utils.StrEnum``; defined here so that the
    MONAI-free cores can use it, and for Python 3.10, which lacks ``enum.StrEnum``)."""

    def __str__(self) -> str:
        return self.value


class SerializeMode(StrEnum):
    """How an image is resampled into leaf tokens (``HierarchicalPatch(mode=...)``)."""

    AREA = "area"
    NEAREST = "nearest"
    FRACTION = "fraction"


class DeserializeMode(StrEnum):
    """How token predictions are depatched (``inverse_mode``)."""

    NEAREST = "nearest"
    LINEAR = "linear"


class SplitCriterion(StrEnum):
    """Split priority of the forest build: the expected depatching error, or the paper's edge count."""

    ERROR = "error"
    EDGES = "edges"


class FillMode(StrEnum):
    """Use of budget left when no leaf with a positive priority can be split."""

    UNIFORM = "uniform"
    PAD = "pad"


class EdgeKind(StrEnum):
    """Score maps: soft edges (uint8, default) or the paper's binary Canny edges."""

    SOFT = "soft"
    CANNY = "canny"


class EdgeMethod(StrEnum):
    """3D Canny operators (``edge_kind="canny"`` only)."""

    ITK = "itk"
    SLICEWISE = "slicewise"


class ChannelReduction(StrEnum):
    """How a multi-channel image's gradients are reduced to one score map."""

    MAX = "max"
    MEAN = "mean"


class SlideBackend(StrEnum):
    """Slide readers of ``open_slide``: ``auto`` picks tifffile for TIFFs, else OpenSlide, else cuCIM."""

    AUTO = "auto"
    TIFFFILE = "tifffile"
    OPENSLIDE = "openslide"
    CUCIM = "cucim"


class Compression(StrEnum):
    """Tile compression of written pyramids."""

    DEFLATE = "deflate"
    JPEG = "jpeg"
    NONE = "none"


class Photometric(StrEnum):
    """Photometric interpretation of written pyramids."""

    RGB = "rgb"
    MINISBLACK = "minisblack"


class SegmentationType(StrEnum):
    """DICOM SEG pixel encoding."""

    BINARY = "binary"
    FRACTIONAL = "fractional"


class PretrainedSource(StrEnum):
    """Checkpoint layouts ``load_vit_weights`` converts."""

    TIMM = "timm"
    SAM = "sam"


class DeviceKind(StrEnum):
    """Devices the inference pipelines run on."""

    CPU = "cpu"
    CUDA = "cuda"


def values(choices: type[Enum]) -> tuple[str, ...]:
    """The values of an enum, in definition order (``values(SerializeMode) == ("area", "nearest", "fraction")``)."""
    return tuple(member.value for member in choices)


def look_up(value: Any, name: str, choices: type[StrEnum]) -> StrEnum:
    """MONAI's ``look_up_option(value, choices)``, its ``ValueError`` naming the parameter ``name``.

    For the MONAI-facing layers (it imports MONAI when called). Returns the enum member, which equals
    its string value."""
    from monai.utils import look_up_option

    try:
        return look_up_option(value, choices)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
