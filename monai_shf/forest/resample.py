"""Serialisation (patching) of an image into ``L`` tokens and its inverse (depatching).

Memory layout: an image is channel-first ``(C, *spatial)``; its tokens are ``(C, L, p, p)`` in 2D and
``(C, L, p, p, p)`` in 3D, token ``i`` being leaf ``i`` of the forest (Z-order) resampled to ``p``
per axis, tokens ``N..L-1`` zero padding. numpy input gives numpy output; torch input gives torch
output on the same device. Inputs are never modified.

Both directions are vectorised over groups of leaves of equal size (a handful of groups). Where a
group's leaves sit on a regular grid (``start % size == 0``, always the case for power-of-two
images) their pixels are reached through a strided *block view* of the image, otherwise through
index arrays.

Resampling rules, along each axis independently (leaf side ``s``, token side ``p``):

* ``serialize(mode="area")`` (images, soft masks): area mean when ``s >= p`` (token pixel ``i`` is
  the mean of the pixels ``o`` with ``floor(o * p / s) == i``: anti-aliased), nearest when
  ``s < p``. Leaves of side ``p * 2**k`` read a 2x area pyramid (OpenCV ``INTER_AREA`` on CPU 2D
  images, ``avg_pool`` otherwise). Float images give exact means (up to float rounding); integer
  images are reduced in their own dtype, each 2x level rounding to the nearest integer (at most
  0.5 per level; below one grey level in practice). Soft label tokens should use ``"fraction"``.
* ``serialize(mode="nearest")`` (hard labels): token pixel ``i`` takes leaf pixel
  ``floor((i + 0.5) * s / p)``; the dtype is kept.
* ``serialize(mode="fraction", num_classes=K)`` (soft labels): a one-channel label map of class
  indices becomes ``K`` channels, the exact fraction of each class under every token pixel.
* ``deserialize(mode="nearest")``: leaf pixel ``o`` takes token pixel ``floor((o + 0.5) * p / s)``;
  exact inverse of ``serialize(mode="nearest")`` for leaves with ``s <= p`` dividing ``p``. Integer
  indexing: the tokens' dtype is kept (class indices stay integers).
* ``deserialize(mode="linear")``, for probabilities or logits, never rounds: along an axis where the
  leaf is at least the token (``s >= p``), linear interpolation with half-pixel centres
  (``align_corners=False``); where it is smaller (``s < p``), the *area (mean) adjoint*: leaf pixel
  ``o`` is the mean of the token pixels ``i`` with ``floor(i * s / p) == o``, so a 2 x 2 leaf
  averages the four 4 x 4 sub-blocks of its 8 x 8 token (interpolation would sample 4 of the 64
  predicted values and ignore the rest). Exact inverse of area/nearest serialisation of such leaves.
* ``deserialize(..., argmax=True)``: class indices (uint8 up to 256 classes) written leaf group by
  leaf group, without a ``C x H x W`` float canvas.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import cv2 as cv
import numpy as np
import torch
import torch.nn.functional as F

from monai_shf.enums import DeserializeMode, SerializeMode, values
from monai_shf.validation import check_array, check_bool, check_choice, check_finite, check_int

from .tree import Forest

__all__ = [
    "serialize",
    "deserialize",
    "label_dtype",
    "resample_matrix",
    "nearest_index",
    "SERIALIZE_MODES",
    "DESERIALIZE_MODES",
]

SERIALIZE_MODES = values(SerializeMode)
DESERIALIZE_MODES = values(DeserializeMode)

# dtypes OpenCV's INTER_AREA handles natively (it rounds integer ones)
_CV_DTYPES = (torch.uint8, torch.uint16, torch.int16, torch.float32, torch.float64)
# elements resampled at once: bounds temporary memory, and small enough that a depatched chunk is
# still in cache when it is scattered into the canvas
_CHUNK_ELEMENTS = 1 << 21


def _as_torch(x: Any) -> torch.Tensor:
    """A plain ``torch.Tensor`` sharing memory with ``x`` (MONAI metadata and numpy stripped)."""
    if isinstance(x, torch.Tensor):
        return x.detach().as_subclass(torch.Tensor)
    x = np.asarray(x)
    if any(stride < 0 for stride in x.strides):  # e.g. np.flip views: torch cannot wrap them
        x = x.copy()  # (ascontiguousarray keeps a negative stride on a length-1 axis)
    with warnings.catch_warnings():  # read-only arrays are fine: nothing here writes to them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(x)


def _alloc(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, zero: bool = False) -> torch.Tensor:
    """A new tensor; on the CPU allocated by numpy, which asks the kernel for huge pages, so first
    touching a large output costs a third of what torch's own allocation does."""
    if device.type != "cpu" or dtype == torch.bfloat16:  # (numpy has no bfloat16)
        return (torch.zeros if zero else torch.empty)(shape, dtype=dtype, device=device)
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    return torch.from_numpy((np.zeros if zero else np.empty)(shape, dtype=np_dtype))


def _restore(out: torch.Tensor, like: Any) -> Any:
    return out if isinstance(like, torch.Tensor) else out.numpy()


def _group_leaves(forest: Forest) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Leaf ids grouped by leaf size: ``[(size, ids), ...]``."""
    # one integer key per size tuple (np.unique over rows is a slow structured sort)
    key = np.ravel_multi_index(tuple(forest.sizes.T), tuple(s + 1 for s in forest.spatial_shape))
    keys, inverse = np.unique(key, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    splits = np.cumsum(np.bincount(inverse, minlength=len(keys)))[:-1]
    sizes = np.stack(np.unravel_index(keys, tuple(s + 1 for s in forest.spatial_shape)), axis=1)
    return [(tuple(int(v) for v in s), ids) for s, ids in zip(sizes, np.split(order, splits))]


class _Blocks:
    """Read/write access to equal-size boxes of a ``(C, *spatial)`` tensor as ``(C, n, *block)``.

    On the CPU the gathers and scatters go through numpy, whose fancy indexing of a strided block
    view is about 5x faster than torch's ``index_put_`` here (0.3 vs 1.4 ms per 10^6 uint8 pixels)."""

    def __init__(self, x: torch.Tensor, starts: np.ndarray, block: tuple[int, ...]):
        self.x, self.block, self.ndim = x, block, len(block)
        self.on_numpy = x.device.type == "cpu" and x.dtype != torch.bfloat16
        array: Any = x.numpy() if self.on_numpy else x

        def index(values: np.ndarray) -> Any:
            return values if self.on_numpy else torch.as_tensor(values, device=x.device)

        self.aligned = bool((starts % np.asarray(block) == 0).all())
        if self.aligned:  # a strided view (C, g0, b0, g1, b1, ...) and grid indices
            grid = [x.shape[1 + a] // b for a, b in enumerate(block)]
            view = array[(slice(None),) + tuple(slice(0, g * b) for g, b in zip(grid, block))]
            shape = (x.shape[0],) + sum(((g, b) for g, b in zip(grid, block)), ())
            self.view = view.reshape(shape)  # (a view: both libraries split axes without copying)
            cells = starts // np.asarray(block)
            self.key = (slice(None),) + sum(((index(cells[:, a]), slice(None)) for a in range(self.ndim)), ())
        else:  # index arrays (n, b_a), broadcast against each other
            self.view = array
            idx = []
            for a, b in enumerate(block):
                rows = (starts[:, a : a + 1] + np.arange(b)).reshape(
                    (-1,) + tuple(b if k == a else 1 for k in range(self.ndim))
                )
                idx.append(index(rows))
            self.key = (slice(None),) + tuple(idx)

    def get(self) -> torch.Tensor:
        out = self.view[self.key]
        out = torch.from_numpy(out) if self.on_numpy else out
        return out.movedim(0, 1) if self.aligned else out

    def put(self, values: torch.Tensor) -> None:
        values = values.movedim(1, 0) if self.aligned else values
        self.view[self.key] = values.numpy() if self.on_numpy else values


def _chunks(ids: np.ndarray, per_leaf: int) -> list[np.ndarray]:
    step = max(1, _CHUNK_ELEMENTS // max(per_leaf, 1))
    return [ids[i : i + step] for i in range(0, len(ids), step)]


def resample_matrix(src: int, dst: int, mode: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(dst, src)`` float64 matrix resampling one axis with half-pixel centres: the per-axis factor of
    :func:`serialize` / :func:`deserialize` (and of the slide mask writer, which depatches tile by tile).

    ``"sum"``: 0/1 membership of source pixel ``o`` in output pixel ``floor(o * dst / src)`` when
    downsampling, the nearest source pixel (:func:`nearest_index`) when upsampling (divide by the row
    sums for means). ``"linear"``: linear interpolation at source coordinate
    ``(o + 0.5) * src / dst - 0.5``, clamped to the box (rows are convex weights), when upsampling
    (``src <= dst``); when downsampling, the area mean (the rows of ``"sum"`` divided by their sums),
    so that every source pixel counts.
    """
    m = torch.zeros(dst, src, dtype=torch.float64)
    rows = torch.arange(dst)
    if src > dst or (mode == "sum" and src == dst):
        m[(torch.arange(src) * dst) // src, torch.arange(src)] = 1.0
        if mode == "linear":
            m /= m.sum(1, keepdim=True)
    elif mode == "sum":
        m[rows, torch.as_tensor(nearest_index(dst, src))] = 1.0
    else:
        u = ((rows.double() + 0.5) * src / dst - 0.5).clamp(0, src - 1)
        lo = u.floor().long()
        hi = (lo + 1).clamp(max=src - 1)
        w = u - lo
        m.index_put_((rows, lo), 1.0 - w, accumulate=True)
        m.index_put_((rows, hi), w, accumulate=True)
    return m.to(device=device)  # float64: callers cast to the data dtype


def _separable(x: torch.Tensor, mats: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``mats[a]`` (``(dst_a, src_a)``) along trailing axis ``a`` of ``x`` (``(..., *src)``).

    The last axis is a right product; each earlier axis is a left product over ``(src_a, rest)``, so
    the final product (axis 0) can write straight into ``out`` (``(..., *dst)``, contiguous).
    """
    ndim = len(mats)
    lead = tuple(x.shape[:-ndim])
    x = x @ mats[-1].to(x.dtype).T
    for a in range(ndim - 2, -1, -1):
        tail = tuple(x.shape[len(lead) + a + 1 :])
        head = tuple(x.shape[len(lead) : len(lead) + a])
        m = mats[a].to(x.dtype)
        y = x.reshape(lead + head + (x.shape[len(lead) + a], math.prod(tail)))
        if a == 0 and out is not None:
            x = torch.matmul(m, y, out=out.view(lead + (m.shape[0], math.prod(tail))))
        else:
            x = m @ y
        x = x.view(lead + head + (m.shape[0],) + tail)
    if ndim == 1 and out is not None:
        out.copy_(x)
        x = out
    return x


def _area_resample(x: torch.Tensor, size: tuple[int, ...], patch: int) -> torch.Tensor:
    """Area-resample ``(..., *size)`` blocks to ``(..., p, p[, p])`` along the trailing axes.

    Sums with 0/1 matrices, then one division: a constant block stays exactly constant."""
    mats = [resample_matrix(s, patch, "sum", x.device) for s in size]
    counts = mats[0].sum(1)
    for m in mats[1:]:
        counts = counts[..., None] * m.sum(1)
    return _separable(x, mats) / counts.to(x.dtype)


class _Scratch:
    """One reusable buffer: fresh large allocations are costly (page faults), so the per-group
    temporaries of a call share it."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.buffer = torch.empty(0, device=device, dtype=dtype)

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        n = math.prod(shape)
        if self.buffer.numel() < n:
            self.buffer = _alloc((n,), self.buffer.dtype, self.buffer.device)
        return self.buffer[:n].view(shape)


class _AreaPyramid:
    """Lazily built 2x area pyramid of a ``(C, *spatial)`` tensor; level ``k`` is ``(C, *spatial >> k)``."""

    def __init__(self, x: torch.Tensor):
        self.levels = [x]

    def level(self, k: int) -> torch.Tensor:
        while len(self.levels) <= k:
            self.levels.append(self._halve(self.levels[-1]))
        return self.levels[k]

    def check_finite(self, name: str) -> None:
        """NaN/inf anywhere in level 0 reach level 1 (means of 2x2 blocks), so level 1 (a quarter of
        the data) plus the odd border rows/columns it crops are checked instead of level 0."""
        x = self.levels[0]
        if len(self.levels) == 1 or not x.is_floating_point():
            check_finite(x, name)
            return
        try:
            check_finite(self.levels[1], name)
            for a, s in enumerate(x.shape[1:]):
                if s % 2:
                    check_finite(x.narrow(1 + a, s - 1, 1), name)
        except ValueError:  # or finite values so large that their 2x2 means overflowed: exact test
            check_finite(x, name)

    @staticmethod
    def _halve(x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(s // 2 for s in x.shape[1:])
        x = x[(slice(None),) + tuple(slice(0, 2 * s) for s in spatial)]
        if x.device.type == "cpu" and x.ndim == 3 and x.dtype in _CV_DTYPES and min(spatial) > 0:
            planes = x.numpy()
            out = np.empty((x.shape[0],) + spatial, dtype=planes.dtype)
            for c in range(x.shape[0]):
                cv.resize(planes[c], spatial[::-1], dst=out[c], interpolation=cv.INTER_AREA)
            return torch.from_numpy(out)
        pool = F.avg_pool2d if x.ndim == 3 else F.avg_pool3d
        # means in at least float32: half precision would round every level (and has no 3D CPU pooling)
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        return pool(xf.unsqueeze(0), 2).squeeze(0)


def _pyramid_level(size: tuple[int, ...], patch: int) -> int | None:
    """The pyramid level serving leaves of ``size``: ``k`` if every side is ``patch * 2**k``."""
    ratio = size[0] // patch
    if size[0] % patch or ratio & (ratio - 1) or any(s != size[0] for s in size):
        return None
    return ratio.bit_length() - 1


def _serialize_area(
    x: torch.Tensor,
    forest: Forest,
    patch: int,
    out: torch.Tensor,
    groups: list | None = None,
    check_name: str | None = "image",
) -> None:
    """Area tokens into ``out``; also checks ``x`` for NaN/inf (cheaply, through the pyramid) unless
    ``check_name`` is None. ``groups``: precomputed :func:`_group_leaves` of the forest."""
    pyramid = _AreaPyramid(x)
    for size, ids in _group_leaves(forest) if groups is None else groups:
        starts = forest.starts[ids]
        level = _pyramid_level(size, patch)
        if level is not None and (starts % np.asarray(size) == 0).all():
            src = pyramid.level(level)
            out[:, torch.as_tensor(ids, device=x.device)] = (
                _Blocks(src, starts >> level, (patch,) * len(size)).get().to(out.dtype)
            )
            continue
        upsample = all(s <= patch and patch % s == 0 for s in size) and len(set(size)) == 1
        if upsample and (starts % np.asarray(size) == 0).all():  # nearest upsampling: integer repeats
            blocks = _Blocks(x, starts, size).get().to(out.dtype)
            for a in range(len(size)):
                blocks = blocks.repeat_interleave(patch // size[a], dim=2 + a)
            out[:, torch.as_tensor(ids, device=x.device)] = blocks
            continue
        for chunk in _chunks(ids, int(np.prod(size)) * x.shape[0]):
            blocks = _Blocks(x, forest.starts[chunk], size).get().to(out.dtype)
            out[:, torch.as_tensor(chunk, device=x.device)] = _area_resample(blocks, size, patch)
    if check_name is not None:
        pyramid.check_finite(check_name)


def _serialize_area_scaled(x: torch.Tensor, forest: Forest, patch: int, out: torch.Tensor) -> None:
    """Area tokens of a finite image whose sums overflow its dtype: float64 sums of the image scaled
    by ``2**-e`` (exact: a power of two), ``2**e`` at least the largest leaf volume, so no sum can
    exceed the largest finite float64; the means are scaled back (and fit: a mean never exceeds the
    largest value). Rare (values within a leaf volume of the dtype's maximum); costs 8 B/px."""
    exponent = int(forest.sizes.prod(1).max()).bit_length()
    scaled = torch.ldexp(x.to(torch.float64), torch.tensor(-exponent, dtype=torch.float64, device=x.device))
    tokens = torch.zeros(out.shape, dtype=torch.float64, device=out.device)
    _serialize_area(scaled, forest, patch, tokens, check_name=None)
    out.copy_(torch.ldexp(tokens, torch.tensor(exponent, dtype=torch.float64, device=out.device)))


def nearest_index(out_len: int, src_len: Any) -> np.ndarray:
    """Nearest source index of each of ``out_len`` outputs over a source of ``src_len`` (half-pixel
    centres): ``floor((i + 0.5) * src_len / out_len)``. ``src_len`` may be an ``(N, 1)`` array."""
    return ((2 * np.arange(out_len) + 1) * src_len) // (2 * out_len)


def _serialize_nearest(x: torch.Tensor, forest: Forest, patch: int, out: torch.Tensor) -> None:
    n, ndim = forest.num_leaves, forest.spatial_dims
    key: list[Any] = [slice(None)]
    for a in range(ndim):
        rows = forest.starts[:, a : a + 1] + nearest_index(patch, forest.sizes[:, a : a + 1])
        shape = (n,) + tuple(patch if k == a else 1 for k in range(ndim))
        key.append(torch.as_tensor(rows, device=x.device).view(shape))
    out[:, :n] = x[tuple(key)]


def _check_image(image: Any, forest: Forest, name: str = "image", finite: bool = True) -> None:
    if not isinstance(forest, Forest):
        raise TypeError(f"forest must be a monai_shf.forest.Forest, got {type(forest).__name__}.")
    check_array(image, name, ndims=(forest.spatial_dims + 1,), finite=finite)
    if tuple(image.shape[1:]) != forest.spatial_shape:
        raise ValueError(
            f"{name} spatial shape {tuple(image.shape[1:])} does not match the forest's spatial shape "
            f"{forest.spatial_shape} (expected {name} shaped (C, *spatial))."
        )


def _check_patch_size(patch_size: Any, spatial_shape: Sequence[int]) -> int:
    """``patch_size`` as an int in ``[1, longest side of the image]``: a token larger than the whole
    image holds no information a smaller one lacks, only memory (``L`` tokens of ``p**D`` values)."""
    patch = check_int(patch_size, "patch_size", 1)
    longest = max(int(s) for s in spatial_shape)
    if patch > longest:
        raise ValueError(
            f"patch_size p={patch} exceeds every side of the image {tuple(int(s) for s in spatial_shape)}: "
            f"a token is at most the image's longest side ({longest})."
        )
    return patch


def serialize(
    image: Any,
    forest: Forest,
    patch_size: int,
    mode: str = "area",
    num_classes: int | None = None,
) -> Any:
    """Resample every leaf of ``forest`` in ``image`` to a ``patch_size`` token.

    Args:
        image: ``(C, *spatial)`` numpy array or torch tensor, ``spatial == forest.spatial_shape``.
        forest: the :class:`~monai_shf.forest.Forest` to patch with.
        patch_size: token side ``p``, ``1 <= p <=`` the image's longest side.
        mode: ``"area"`` (images, soft masks), ``"nearest"`` (hard labels) or ``"fraction"``
            (one-channel class-index labels to per-class fractions); see the module docstring.
        num_classes: ``K``, required for ``"fraction"`` (never inferred from the data: a sample without
            the last classes would get fewer channels, so that channel ``k`` would not mean class ``k``
            in every sample and batches would not collate); ignored by the other modes.

    Returns:
        ``(C, L, p, p[, p])`` tokens (``(K, L, ...)`` for ``"fraction"``): float32 for ``"area"`` and
        ``"fraction"`` (float64 input stays float64), the input dtype for ``"nearest"``; padding zero.
        Half-precision (float16, bfloat16) images give float32 area tokens; ``"nearest"`` keeps them.
        Finite values near the dtype's maximum give finite means (sums that would overflow are
        recomputed in float64, scaled by a power of two).
    """
    if isinstance(forest, Forest):
        _check_patch_size(patch_size, forest.spatial_shape)
    return _serialize(image, forest, patch_size, mode, num_classes)


def _serialize(image: Any, forest: Forest, patch_size: int, mode: str, num_classes: int | None) -> Any:
    """:func:`serialize` without the bound of ``patch_size`` by the image's sides (for images that are
    a column of leaves cut from a larger one, such as a slide's)."""
    mode = check_choice(mode, "mode", SERIALIZE_MODES)
    if mode == "fraction" and num_classes is None:
        raise ValueError(
            "num_classes is required for mode='fraction' (the number of classes K, so that every sample "
            "gets the same K channels)."
        )
    _check_image(image, forest, finite=mode != "area")  # "area" checks through its pyramid
    patch = check_int(patch_size, "patch_size", 1)
    x = _as_torch(image)
    c, ndim = x.shape[0], forest.spatial_dims
    token_shape = (forest.length,) + (patch,) * ndim
    if x.dtype == torch.bool and mode != "nearest":
        x = x.to(torch.uint8)
    if mode == "nearest":
        out = _alloc((c,) + token_shape, x.dtype, x.device, zero=True)
        _serialize_nearest(x, forest, patch, out)
        return _restore(out, image)
    if mode == "area":
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        out = _alloc((c,) + token_shape, dtype, x.device, zero=True)
        _serialize_area(x, forest, patch, out)  # raises on NaN/inf in x
        if not bool(torch.isfinite(out).all()):  # x is finite: huge values whose sums overflowed
            _serialize_area_scaled(x, forest, patch, out)
        return _restore(out, image)
    # fraction: one exact float32 plane per class; the last class is what the others leave
    if c != 1:
        raise ValueError(f"mode='fraction' needs a one-channel label map of class indices, got {c} channels.")
    if x.is_floating_point() and not bool((x == torch.round(x)).all()):
        raise ValueError("mode='fraction' needs integer class indices, the label has fractional values.")
    top = int(x.max())
    k = check_int(num_classes, "num_classes", 1)
    if int(x.min()) < 0 or top >= k:
        raise ValueError(f"label values must lie in [0, num_classes={k}), got {int(x.min())}..{top}.")
    out = _alloc((k,) + token_shape, torch.float32, x.device, zero=True)
    groups = _group_leaves(forest)
    for cls in range(max(k - 1, 1)):  # (class planes are finite by construction: no NaN check)
        _serialize_area((x == cls).to(torch.float32), forest, patch, out[cls : cls + 1], groups=groups, check_name=None)
    if k > 1:
        out[k - 1, : forest.num_leaves] = 1.0 - out[: k - 1, : forest.num_leaves].sum(0)
    return _restore(out, image)


def _check_tokens(tokens: Any, forest: Forest) -> int:
    if not isinstance(forest, Forest):
        raise TypeError(f"forest must be a monai_shf.forest.Forest, got {type(forest).__name__}.")
    ndim = forest.spatial_dims
    check_array(tokens, "tokens", ndims=(ndim + 2,), finite=False)
    shape = tuple(int(s) for s in tokens.shape)
    if shape[1] != forest.length:
        raise ValueError(
            f"tokens hold L={shape[1]} tokens but the forest has length {forest.length} (tokens shape {shape})."
        )
    patch = shape[2]
    if any(s != patch for s in shape[2:]):
        raise ValueError(f"tokens must be (C, L{', p' * ndim}) with equal sides p for D={ndim}, got shape {shape}.")
    return patch


def label_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer dtype holding class indices ``0..num_classes-1``: uint8 up to 256
    classes, then int16, then int32."""
    if num_classes <= 256:
        return torch.uint8
    return torch.int16 if num_classes <= 1 << 15 else torch.int32


def _token_indices(size: tuple[int, ...], patch: int, device: torch.device) -> list[torch.Tensor]:
    """Per axis, the token pixel each leaf pixel takes in ``"nearest"`` depatching."""
    return [torch.as_tensor(nearest_index(s, patch), device=device) for s in size]


def _take_nearest(group: torch.Tensor, index: list[torch.Tensor]) -> torch.Tensor:
    """``(C, n, p, ...)`` tokens to ``(C, n, *size)`` leaf blocks by integer indexing (any dtype, exact)."""
    for a, rows in enumerate(index):
        group = group.index_select(2 + a, rows)
    return group


def deserialize(tokens: Any, forest: Forest, mode: str = "linear", argmax: bool = False) -> Any:
    """Rebuild a full-resolution ``(C, *spatial)`` image from ``(C, L, p, p[, p])`` tokens.

    Along each axis, a leaf side ``s`` and the token side ``p``: ``"linear"`` interpolates
    (half-pixel centres) when ``s >= p`` and takes the area mean of the token pixels falling in each
    leaf pixel when ``s < p`` (the adjoint of area downsampling: a 2 x 2 leaf averages its token's
    4 x 4 sub-blocks instead of sampling 4 of its 64 values); ``"nearest"`` copies the nearest token
    pixel.

    Args:
        tokens: numpy array or torch tensor shaped like the output of :func:`serialize`.
        forest: the forest the tokens were made with.
        mode: ``"linear"`` (probabilities, logits; default) or ``"nearest"`` (hard labels).
        argmax: return ``(1, *spatial)`` class indices (the argmax over the ``C`` channels of the
            depatched scores, ties to the lower index) instead of the ``C`` planes. They are written
            straight into a uint8 canvas (int16/int32 beyond 256 classes, see :func:`label_dtype`),
            leaf group by leaf group: no ``C x H x W`` float canvas is ever made. With two channels
            and ``"linear"``, ``x1 - x0`` is depatched once and its sign kept (depatching is linear;
            equal to the argmax of the depatched planes up to float rounding at near-ties).

    Returns:
        ``(C, *forest.spatial_shape)``, same type/device as ``tokens``. ``"linear"``: float32
        (float64 for float64 tokens). ``"nearest"``: the tokens' dtype (integer and bool tokens stay
        integer; float16/bfloat16 become float32). ``argmax=True``: ``(1, *spatial)`` class indices.
        Padding tokens are ignored.

    Memory (beyond the output): chunks of at most ``2**21`` elements, i.e. a few MB whatever the
    image size; ``argmax=True`` at 8192^2 with ``C = 2`` needs 1 B/px for the output plus those chunks.
    """
    patch = _check_tokens(tokens, forest)
    mode = check_choice(mode, "mode", DESERIALIZE_MODES)
    argmax = check_bool(argmax, "argmax")
    t = _as_torch(tokens)
    device = t.device
    channels = t.shape[0]
    float_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    sign_only = False
    if argmax:
        out_dtype = label_dtype(channels)
        if mode == "nearest":  # nearest sampling commutes with the per-pixel argmax: argmax the tokens
            t = _argmax_channels(t.to(torch.uint8) if t.dtype == torch.bool else t, out_dtype)
            channels = 1
        elif channels == 2:  # depatching is linear: depatch x1 - x0 once and keep its sign
            t = t[1:].to(float_dtype) - t[:1].to(float_dtype)
            channels, sign_only = 1, True
    elif mode == "nearest":
        out_dtype = float_dtype if t.dtype in (torch.float16, torch.bfloat16) else t.dtype
    else:
        out_dtype = float_dtype
    # leaves tile the image (checked when the forest was made), so every canvas pixel is written
    # exactly once: no zero fill needed
    canvas = _alloc((1 if argmax else channels,) + forest.spatial_shape, out_dtype, device)
    scratch = _Scratch(device, float_dtype)
    for size, ids in _group_leaves(forest):
        if mode == "nearest":
            index = _token_indices(size, patch, device)
        else:
            mats = [resample_matrix(patch, s, mode, device) for s in size]
        for chunk in _chunks(ids, int(np.prod(size)) * channels):
            group = t[:, torch.as_tensor(chunk, device=device)]
            if mode == "nearest":
                blocks = _take_nearest(group, index).to(out_dtype)
            else:
                group = group.to(float_dtype)
                blocks = _separable(group, mats, out=scratch.take(group.shape[:2] + size))
                if sign_only:  # class 1 where x1 > x0 (ties to class 0, like argmax)
                    blocks = torch.gt(blocks, 0).view(torch.uint8)
                elif argmax:
                    blocks = _argmax_channels(blocks, out_dtype)
            _Blocks(canvas, forest.starts[chunk], size).put(blocks)
    return _restore(canvas, tokens)


def _argmax_channels(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(C, ...)`` scores to ``(1, ...)`` class indices of ``dtype`` (ties to the lower index)."""
    if x.shape[0] == 2:  # two classes: one comparison, no int64 index temporary
        return torch.gt(x[1], x[0]).view(torch.uint8).to(dtype).unsqueeze(0)
    return torch.argmax(x, dim=0, keepdim=True).to(dtype)
