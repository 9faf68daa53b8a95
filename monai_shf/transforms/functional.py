"""Functional SHF transforms: pure functions plus MONAI trace bookkeeping.

``hierarchical_patch`` serialises an image with a forest and records the forest in the image's
``applied_operations``; ``depatch`` rebuilds the full-resolution image; ``forest_from_trace`` finds
the forest again in a MetaTensor's trace. The array and dictionary transforms are thin wrappers.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor, get_track_meta
from monai.transforms.inverse import TraceableTransform
from monai.utils import TraceKeys, convert_to_tensor

from monai_shf.forest import Forest, deserialize, serialize
from monai_shf.forest.spacing import check_spacing

__all__ = [
    "PATCH_CLASS_NAMES",
    "hierarchical_patch",
    "record_patch",
    "depatch",
    "forest_from_trace",
    "resolve_depatch_mode",
    "patch_record_index",
    "patch_extra_info",
    "padding_dtype",
    "SPACING_FROM_META",
    "check_spacing_option",
    "image_spacing",
]

SPACING_FROM_META = "meta"
"""The ``spacing`` option of the patching transforms that reads the voxel size from the image's metadata."""

# names under which the patch transform appears in applied_operations
PATCH_CLASS_NAMES = ("HierarchicalPatch",)


def patch_extra_info(
    forest: Forest, patch_size: int, mode: str, inverse_mode: str, inverse_argmax: bool = False
) -> dict[str, Any]:
    """The ``extra_info`` recorded for one patching: picklable numpy/int/str/bool values only.

    ``"mode"`` is the depatching mode (``Invertd(nearest_interp=True)`` turns it into ``"nearest"``);
    ``"serialize_mode"`` is how the tokens were made; ``"argmax"``: the inverse returns class indices."""
    return {
        "forest": forest.to_dict(),
        "patch_size": int(patch_size),
        "mode": inverse_mode,
        "serialize_mode": mode,
        "argmax": bool(inverse_argmax),
    }


def hierarchical_patch(
    img: Any,
    forest: Forest,
    patch_size: int,
    mode: str,
    inverse_mode: str,
    num_classes: int | None,
    padding_value: float,
    transform_info: dict,
    inverse_argmax: bool = False,
) -> torch.Tensor:
    """Serialise ``img`` ``(C, *spatial)`` into ``(C', L, p, ...)`` tokens and record the forest
    (``inverse_argmax``: the inverse is to return class indices, see :func:`depatch`).

    The tokens keep ``img``'s metadata (affine included: it describes the image the tokens came from
    and is what the inverse restores); ``applied_operations`` gains one entry with the forest.
    """
    img = convert_to_tensor(img, track_meta=get_track_meta())  # like MONAI's transforms: trace numpy input too
    tokens = serialize(img, forest, patch_size, mode=mode, num_classes=num_classes)
    return record_patch(
        img, tokens, forest, patch_size, mode, inverse_mode, padding_value, transform_info, inverse_argmax
    )


def record_patch(
    img: Any,
    tokens: Any,
    forest: Forest,
    patch_size: int,
    mode: str,
    inverse_mode: str,
    padding_value: float,
    transform_info: dict,
    inverse_argmax: bool = False,
) -> torch.Tensor:
    """Give ``(C', L, p, ...)`` ``tokens`` made from ``img`` with ``forest`` the padding value and the
    trace of one patching: ``img``'s metadata and ``applied_operations`` plus one entry holding the
    forest (the record that :func:`forest_from_trace`, ``Invertd`` and ``Depatchd`` read).

    ``img`` is the source as a MetaTensor (its metadata and trace are copied) or anything else (plain
    tokens are returned). Whole-slide transforms pass a MetaTensor carrying only the slide's metadata.
    """
    tokens = convert_to_tensor(tokens, track_meta=False)
    if padding_value != 0:
        # the dtype depends on the arguments only (never on whether this sample has padding), so
        # every sample of a dataset collates
        tokens = tokens.to(padding_dtype(tokens.dtype, padding_value))
        tokens[:, forest.num_leaves :] = padding_value
    extra_info = patch_extra_info(forest, patch_size, mode, inverse_mode, inverse_argmax)
    meta_info = TraceableTransform.track_transform_meta(
        img,
        sp_size=tuple(tokens.shape[1:]),
        extra_info=extra_info,
        orig_size=forest.spatial_shape,
        transform_info=transform_info,
    )
    if isinstance(img, MetaTensor):
        return MetaTensor(tokens).copy_meta_from(meta_info)
    return tokens


def padding_dtype(dtype: torch.dtype, padding_value: float) -> torch.dtype:
    """``dtype``, or the smallest wider one that holds ``padding_value`` (e.g. uint8 tokens padded
    with -100 become int16; a fractional value makes integer tokens float32)."""
    if dtype.is_floating_point:
        return dtype
    if float(padding_value) != int(padding_value):
        return torch.float32
    value = int(padding_value)
    for candidate in (dtype, torch.uint8, torch.int16, torch.int32, torch.int64):
        if candidate == torch.bool:
            continue
        info = torch.iinfo(candidate)
        if info.min <= value <= info.max and (candidate == dtype or torch.promote_types(dtype, candidate) == candidate):
            return candidate
    return torch.int64


def depatch(tokens: Any, forest: Forest, mode: str, consume_record: bool = False, argmax: bool = False) -> torch.Tensor:
    """Rebuild ``(C, *spatial)`` from ``(C, L, p, ...)`` tokens; metadata (and the trace) of a
    MetaTensor input are kept on the output.

    With ``argmax`` the result is ``(1, *spatial)`` class indices (uint8 up to 256 classes), the
    argmax over the ``C >= 2`` depatched score channels, written without a ``C x H x W`` float canvas
    (:func:`monai_shf.forest.deserialize`). With ``consume_record`` the output's
    ``applied_operations`` lacks the most recent entry (the patching being undone); the input's own
    trace is never modified.
    """
    if argmax and tokens.shape[0] < 2:
        raise ValueError(
            f"argmax needs tokens of C >= 2 class scores, got {tuple(tokens.shape)}; a one-channel map is "
            "depatched without argmax."
        )
    out = convert_to_tensor(deserialize(tokens, forest, mode=mode, argmax=bool(argmax)), track_meta=False)
    if not isinstance(tokens, MetaTensor):
        return out
    out = MetaTensor(out).copy_meta_from(tokens)  # the trace list is copied, its entries shared
    if consume_record:
        out.applied_operations = out.applied_operations[:-1]
    return out


def resolve_depatch_mode(tokens: Any, mode: str | None, recorded: str | None = None) -> str:
    """The depatching mode of ``(C, L, p, ...)`` tokens.

    An explicit ``mode`` wins. Otherwise class maps are depatched with ``"nearest"`` (interpolating
    class indices invents classes: between 0 and 2 lies a spurious 1): integer or bool tokens, and
    one-channel float tokens whose values are all integers (what ``AsDiscrete(argmax=True)`` returns).
    Everything else uses ``recorded`` (the mode stored with the forest), else ``"linear"``.
    """
    if mode is not None:
        return mode
    t = tokens.as_tensor() if isinstance(tokens, MetaTensor) else tokens
    dtype = t.dtype
    if isinstance(dtype, torch.dtype):
        integral = not dtype.is_floating_point and not dtype.is_complex
    else:  # numpy
        integral = dtype.kind in "biu"
    if integral:
        return "nearest"
    if t.ndim >= 2 and t.shape[0] == 1 and t.numel() > 0:
        t = torch.as_tensor(t)
        if bool(torch.equal(t, torch.round(t))):
            return "nearest"
    return recorded or "linear"


def patch_record_index(img: Any) -> int | None:
    """Position of the most recent patching in a MetaTensor's ``applied_operations`` (None: none,
    or not a MetaTensor)."""
    if not isinstance(img, MetaTensor):
        return None
    ops = img.applied_operations
    for i in range(len(ops) - 1, -1, -1):
        if isinstance(ops[i], dict) and ops[i].get(TraceKeys.CLASS_NAME) in PATCH_CLASS_NAMES:
            return i
    return None


def forest_from_trace(img: Any, latest: bool = False) -> tuple[Forest, dict[str, Any]]:
    """The most recent patching recorded in a MetaTensor's ``applied_operations`` (read only: the
    trace is never modified).

    Returns the forest and the whole ``extra_info``. With ``latest`` the record must be the most
    recent transform of ``img`` (what depatching it as the next inverse step requires)."""
    if not isinstance(img, MetaTensor):
        raise TypeError(
            f"the forest is read from a MetaTensor's applied_operations, got {type(img).__name__}; "
            "pass the forest explicitly or use a MetaTensor produced by HierarchicalPatch."
        )
    i = patch_record_index(img)
    if i is None:
        raise ValueError(
            "no HierarchicalPatch record in applied_operations: these tokens were not made by HierarchicalPatch."
        )
    ops = img.applied_operations
    if latest and i != len(ops) - 1:
        raise ValueError(
            "the patching is not the most recent transform of this MetaTensor; invert the later ones first."
        )
    info = ops[i][TraceKeys.EXTRA_INFO]
    return Forest.from_dict(info["forest"]), info


def check_spacing_option(spacing: Any) -> tuple[float, ...] | str | None:
    """The transforms' ``spacing`` option, validated when the transform is made: ``None`` (voxel cubes),
    ``"meta"`` (read from each image's affine) or the voxel sizes, positive and finite (their count is
    checked against each image)."""
    if spacing is None or (isinstance(spacing, str) and spacing == SPACING_FROM_META):
        return spacing
    if isinstance(spacing, str):
        raise ValueError(f"spacing must be None, {SPACING_FROM_META!r} or the voxel sizes, got {spacing!r}.")
    values = spacing.tolist() if hasattr(spacing, "tolist") else spacing
    try:
        ndim = len(values)
    except TypeError:
        raise TypeError(
            f"spacing must be None, {SPACING_FROM_META!r} or a sequence of voxel sizes, got {type(spacing).__name__}."
        ) from None
    if ndim not in (2, 3):
        raise ValueError(f"spacing must have 2 or 3 entries (one per spatial axis), got {ndim}: {list(values)}.")
    return check_spacing(values, ndim)


def image_spacing(img: Any, spacing: tuple[float, ...] | str | None) -> tuple[float, ...] | None:
    """The voxel size of a ``(C, *spatial)`` image under the option ``spacing`` (see
    :func:`check_spacing_option`): ``"meta"`` reads ``img.pixdim`` (the column norms of its affine), which
    needs a MetaTensor; explicit sizes must have one entry per spatial axis."""
    ndim = len(img.shape) - 1
    if spacing is None:
        return None
    if isinstance(spacing, str):
        if not isinstance(img, MetaTensor):
            raise TypeError(
                f"spacing={SPACING_FROM_META!r} reads the voxel size from a MetaTensor's affine, got "
                f"{type(img).__name__}; load the image with its metadata or pass the spacing explicitly."
            )
        pixdim = [float(v) for v in torch.as_tensor(img.pixdim).reshape(-1).tolist()]
        if len(pixdim) < ndim:
            raise ValueError(
                f"spacing={SPACING_FROM_META!r}: the affine gives {len(pixdim)} voxel sizes for a {ndim}D image."
            )
        return check_spacing(pixdim[:ndim], ndim)
    return check_spacing(spacing, ndim)
