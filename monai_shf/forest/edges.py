"""Edge maps that drive the forest: soft edges (any dimension), Gaussian blur + Canny (2D, OpenCV)
and a 3D Canny (ITK).

Two kinds (``EDGE_KINDS``):

* ``"soft"`` (:func:`soft_edge_map`, the transforms' default): every pixel weighs how likely it is to
  lie on a boundary, ``min(|grad| / (low / 8), 1)`` stored as ``0..255`` uint8: the gradient
  magnitude (central differences of the Gaussian-blurred 8-bit image) relative to Canny's low
  threshold, capped at one edge pixel. A pixel Canny would consider (above ``low``) counts fully;
  weaker ones count in proportion instead of not at all, so faint boundaries that Canny drops still
  draw leaves, while strong edges do not outweigh faint ones (unlike the raw gradient). No
  non-maximum suppression, no hysteresis: the map is local, computed band by band in 2D and 3D alike
  and exact across bands.
* ``"canny"`` (:func:`edge_map`, the paper's): binary Canny edges, described below.

Any dtype, range and channel count is accepted. The image is first brought to 8 bits the way the
paper's thresholds expect (they are grey levels of an 8-bit image): ``uint8`` is used as is, ``bool``
becomes 0/255, anything else is min-max scaled over the whole image to 0..255 (a constant image
gives no edges). Channels, in 2D with ``channel_reduction="max"`` (default, as the paper's
``cv.Canny`` on an RGB image): the gradient of the channel with the largest gradient at each pixel
(OpenCV's multi-channel Canny; 2 channels are padded to 3 by repetition, more than 3 are averaged);
with ``"mean"``: Canny of the rounded mean of the 8-bit channels (itself an 8-bit image, so the
thresholds keep their meaning). In 3D channels are always averaged.

2D edges are computed in row bands (:func:`canny_bands`) and equal a whole-image ``cv.Canny`` exactly:
each band is read with a halo of ``kernel_size // 2 + 2`` rows (what blur, Sobel and non-maximum
suppression reach), and the hysteresis that links weak pixels to strong ones across band borders is
redone with connected components joined between bands. Peak memory is the output (1 byte per pixel)
plus a few band-sized buffers, whatever the image size, and the same code serves whole-slide pyramids
(the caller's ``read_rows`` reads a slide level).

3D methods: ``"itk"`` runs ITK's N-D ``CannyEdgeDetectionImageFilter`` (a true 3D operator; slow,
seconds per 128^3 volume on two cores); ``"slicewise"`` runs the 2D OpenCV operator on every slice
along each of the three axes and joins the results (edges of every orientation, tens of times faster).
The Gaussian of ``kernel_size`` ``k`` has OpenCV's sigma ``0.3 * ((k - 1) / 2 - 1) + 0.8``
(``k = 1``: no blur). ITK thresholds a plain gradient magnitude while OpenCV's Canny thresholds a
3x3 Sobel (L1) response, about 8x larger for a step edge, so ITK receives ``thresholds / 8``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2 as cv
import numpy as np
import torch

from monai_shf.validation import check_array, check_choice, check_int, to_numpy

from . import device as _device
from .spec import CHANNEL_REDUCTIONS, EDGE_METHODS, EdgeSpec, check_edge_args

__all__ = [
    "score_map",
    "edge_map",
    "soft_edge_map",
    "soft_edge_bands",
    "canny_bands",
    "to_uint8",
]

# A step edge's 3x3 Sobel L1 response (what OpenCV's Canny thresholds) is about 8x its
# central-difference gradient magnitude (what soft edges measure): soft edges saturate at ``low / 8``.
_SOBEL_TO_GRADIENT = 8.0
# edge_map's bands: 1/32 of the image (two bands are in flight, one per thread: peak memory stays a small
# fraction of the image's), but at least 0.5 Mpx (two Canny passes and the labelling per band cost more than
# one whole-image Canny on small bands; an image of up to 1 Mpx is one band, i.e. plain cv.Canny) and at most
# 2 Mpx (bounded whatever the width).
_BAND_FRACTION = 32
_MIN_BAND_PIXELS = 1 << 19
_MAX_BAND_PIXELS = 1 << 21
_ONE_BAND_PIXELS = 1 << 20
# Rows converted to uint8 at a time when a 3D volume is scaled (bounds the float temporary).
_SCALE_CHUNK = 64


def to_uint8(image: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """``image`` (any shape) as uint8: uint8 unchanged, bool as 0/255, else min-max to 0..255.

    Args:
        image: any-shape numpy array.
        lo, hi: the range mapped to 0..255 (default: ``image``'s own min and max). Passing the whole
            image's range scales a band or slice of it exactly as the whole image would be.

    Returns:
        uint8 array of ``image``'s shape (``image`` itself when it is already uint8). Peak extra memory:
        one float32 temporary of ``image``'s size for non-uint8 input (callers pass bands).
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.view(np.uint8) * np.uint8(255)
    if lo is None or hi is None:
        lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = image.astype(np.float32)
    scaled -= np.float32(lo)
    scaled *= np.float32(255.0 / (hi - lo))
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def _canny_2d(planes: np.ndarray, k: int, low: float, high: float) -> np.ndarray:
    """Canny of a ``(H, W)`` or channel-last ``(H, W, 3)`` uint8 image: ``(H, W)`` uint8, 255 on edges."""
    blurred = cv.GaussianBlur(planes, (k, k), 0) if k > 1 else planes
    return cv.Canny(blurred, low, high)


def _channel_mean(rows: np.ndarray) -> np.ndarray:
    """Rounded mean of ``(C, h, W)`` uint8 channels as ``(h, W)`` uint8, in integers (no float temporary)."""
    c = rows.shape[0]
    total = np.add.reduce(rows, axis=0, dtype=np.uint16 if c <= 257 else np.uint32)
    total += c // 2
    total //= c
    return total.astype(np.uint8)


def _planes(rows: np.ndarray, reduction: str) -> np.ndarray:
    """The OpenCV input of one band: ``(h, W)`` grey or channel-last ``(h, W, 3)``, uint8, contiguous.

    Only the band is made channel-last (never the whole image): 2 channels are padded to 3 by
    repeating the last one, more than 3 (or ``reduction="mean"``) are averaged."""
    c = rows.shape[0]
    if c == 1:
        return np.ascontiguousarray(rows[0])
    if reduction == "mean" or c > 3:
        return _channel_mean(rows)
    planes = np.empty((*rows.shape[1:], 3), dtype=np.uint8)
    for i in range(3):
        planes[..., i] = rows[min(i, c - 1)]
    return planes


class _BorderComponents:
    """Union-find of the candidate components that touch a band border, keyed by global ids.

    Each set remembers whether it holds a strong pixel; a set only ever becomes strong, never the reverse,
    so a component decided "edge" when its band is written stays an edge."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.strong: dict[int, bool] = {}

    def add(self, gid: int, strong: bool) -> None:
        self.parent[gid] = gid
        self.strong[gid] = strong

    def find(self, gid: int) -> int:
        parent = self.parent
        while parent[gid] != gid:
            parent[gid] = parent[parent[gid]]
            gid = parent[gid]
        return gid

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.strong[ra] = self.strong[ra] or self.strong[rb]

    def is_strong(self, gid: int) -> bool:
        return self.strong[self.find(gid)]


def _link_rows(above: np.ndarray, below: np.ndarray) -> np.ndarray:
    """Unique ``(gid_above, gid_below)`` pairs of 8-connected nonzero ids in two adjacent ``(W,)`` rows."""
    w = above.shape[0]
    pairs = []
    for shift in (-1, 0, 1):  # pixel (r, j) touches (r + 1, j + shift)
        a = above[max(0, -shift) : w - max(0, shift)]
        b = below[max(0, shift) : w - max(0, -shift)]
        both = (a > 0) & (b > 0)
        pairs.append(np.stack([a[both], b[both]], axis=1))
    return np.unique(np.concatenate(pairs), axis=0)


class _BandJoiner:
    """Hysteresis across row bands: the components of each band that touch a band border are joined
    (union-find) with those of the band above; a component is an edge once any of its parts is strong.
    Pixels of components still undecided when their band is written are kept (16 bytes each) and set by
    :meth:`finish`."""

    def __init__(self, height: int) -> None:
        self.height = height
        self.border = _BorderComponents()
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, cols, gids) of open pixels
        self.previous_bottom: np.ndarray | None = None  # gids of the last row of the previous band (0: none)
        self.next_gid = 1

    def join(self, count: int, labels: np.ndarray, strong: np.ndarray, start: int, stop: int, out: np.ndarray) -> None:
        """Write band rows ``start:stop`` (``labels`` ``(rows, W)`` of ``count`` components) into ``out``."""
        is_open = np.zeros(count, dtype=bool)
        if start > 0:
            is_open[labels[0]] = True
        if stop < self.height:
            is_open[labels[-1]] = True
        is_open[0] = False
        open_labels = np.flatnonzero(is_open)
        gids = np.zeros(count, dtype=np.int64)
        gids[open_labels] = np.arange(self.next_gid, self.next_gid + len(open_labels))
        self.next_gid += len(open_labels)
        for label in open_labels:
            self.border.add(int(gids[label]), bool(strong[label]))
        if self.previous_bottom is not None:
            for above, below in _link_rows(self.previous_bottom, gids[labels[0]]).tolist():
                self.border.union(above, below)
        undecided = np.zeros(count, dtype=bool)
        for label in open_labels:
            strong[label] = self.border.is_strong(int(gids[label]))
            undecided[label] = not strong[label]
        out[start:stop] = strong[labels]
        if undecided.any():
            rr, cc = np.nonzero(undecided[labels])
            self.pending.append(((rr + start).astype(np.int32), cc.astype(np.int32), gids[labels[rr, cc]]))
        self.previous_bottom = gids[labels[-1]] if stop < self.height else None

    def finish(self, out: np.ndarray) -> None:
        """Set the pixels of components whose strong pixel lay in a later band."""
        for rr, cc, gid in self.pending:
            unique, inverse = np.unique(gid, return_inverse=True)
            now_strong = np.array([self.border.is_strong(int(g)) for g in unique], dtype=bool)[inverse]
            out[rr[now_strong], cc[now_strong]] = True


def _output_array(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``out`` checked to be a numpy array of ``shape`` and ``dtype``, or a new empty one."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != tuple(shape):
        raise ValueError(
            f"out must be a {dtype.name} numpy array of shape {tuple(shape)}, got "
            f"{getattr(out, 'dtype', type(out).__name__)} {tuple(getattr(out, 'shape', ()))}."
        )
    return out


def canny_bands(
    read_rows: Callable[[int, int], np.ndarray],
    shape: Sequence[int],
    kernel_size: int = 3,
    thresholds: Sequence[float] = (50, 100),
    channel_reduction: str = "max",
    band_rows: int = 512,
    out: np.ndarray | None = None,
    workers: int = 2,
) -> np.ndarray:
    """Gaussian blur + Canny of a 2D image read in row bands, written into one ``(H, W)`` bool map.

    The image is never held whole: ``read_rows(row_start, row_stop)`` returns rows
    ``row_start:row_stop`` of it as a channel-first ``(C, row_stop - row_start, W)`` uint8 array (the
    caller may slice an array, read a slide level, or downsample on the fly). The result equals a
    whole-image ``cv.Canny`` of the blurred image exactly: each band is read with a halo of
    ``kernel_size // 2 + 2`` rows, so its candidate pixels (non-maximum suppressed, gradient above
    ``low``) and strong pixels (above ``high``) are the whole image's; candidates are grouped into
    8-connected components per band, components that touch a band border are joined across bands
    (union-find), and a component is an edge iff it holds a strong pixel (OpenCV's hysteresis). Pixels
    of border components whose fate is still open when their band is written are kept as coordinates
    and set at the end (a small fraction of the edges).

    Args:
        read_rows: ``(row_start, row_stop) -> (C, rows, W)`` uint8 numpy array, the same ``C`` for every call.
        shape: ``(H, W)`` of the image.
        kernel_size: odd Gaussian kernel side (1 = no blur).
        thresholds: Canny ``(low, high)`` hysteresis thresholds on the 8-bit scale.
        channel_reduction: ``"max"`` (OpenCV's multi-channel gradient) or ``"mean"`` (rounded channel mean).
        band_rows: rows per band (>= 1). Peak extra memory is about ``(band_rows + 2 * halo) * W * 16``
            bytes for RGB (the channel-last band, its blur, the component labels and OpenCV's buffers) on
            top of ``out``, plus 16 bytes per still-open border pixel.
        out: optional preallocated ``(H, W)`` bool array to write into.
        workers: threads computing bands (blur, Canny, components: OpenCV releases the GIL), each at
            most one band ahead of the joining; ``read_rows`` is always called from the calling thread,
            in order. Memory grows by one band per worker.

    Returns:
        ``(H, W)`` bool edge map (``out`` when given).
    """
    if not callable(read_rows):
        raise TypeError(f"read_rows must be a callable (row_start, row_stop) -> (C, rows, W) uint8, got {read_rows!r}.")
    if not isinstance(shape, (Sequence, np.ndarray)) or len(shape) != 2:
        raise TypeError(f"shape must be a pair (H, W), got {shape!r}.")
    h, w = (check_int(s, "shape", 1) for s in shape)
    k, low, high = check_edge_args(kernel_size, thresholds)
    reduction = check_choice(channel_reduction, "channel_reduction", CHANNEL_REDUCTIONS)
    band = check_int(band_rows, "band_rows", 1)
    out = _output_array(out, (h, w), np.dtype(bool))
    if band >= h:  # one band: OpenCV's own hysteresis is the whole-image one
        rows = _checked_rows(read_rows, 0, h, (w,), None)
        np.greater(_canny_2d(_planes(rows, reduction), k, low, high), 0, out=out)
        return out
    halo = k // 2 + 2  # blur + Sobel + non-maximum suppression: candidates and strong pixels are exact
    workers = check_int(workers, "workers", 1)
    joiner = _BandJoiner(h)
    channels = None
    starts = list(range(0, h, band))
    queue: deque = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for index, start in enumerate(starts):
            # keep `workers` bands in flight; reads stay in this thread and in order
            while len(queue) < workers and index + len(queue) < len(starts):
                ahead = starts[index + len(queue)]
                top, bottom = max(0, ahead - halo), min(h, min(h, ahead + band) + halo)
                rows = _checked_rows(read_rows, top, bottom, (w,), channels)
                channels = rows.shape[0]
                core = slice(ahead - top, min(h, ahead + band) - top)
                queue.append(pool.submit(_band_components, rows, reduction, k, low, high, core))
            count, labels, strong = queue.popleft().result()
            joiner.join(count, labels, strong, start, min(h, start + band), out)
    joiner.finish(out)
    return out


def _band_components(
    rows: np.ndarray, reduction: str, k: int, low: float, high: float, core: slice
) -> tuple[int, np.ndarray, np.ndarray]:
    """One band's Canny candidates as 8-connected components: ``(count, labels (rows, W) int32, strong
    (count,) bool)``, ``strong[c]`` when component ``c`` holds a pixel above ``high`` (label 0: none).
    ``rows`` is the band with its halo; ``core`` the band's own rows in it."""
    planes = _planes(rows, reduction)
    blurred = cv.GaussianBlur(planes, (k, k), 0) if k > 1 else planes
    candidates = cv.Canny(blurred, low, low)[core]
    strong_pixels = cv.Canny(blurred, high, high)[core] > 0
    del planes, blurred
    count, labels = cv.connectedComponents(candidates, connectivity=8, ltype=cv.CV_32S)
    strong = np.zeros(count, dtype=bool)
    strong[labels[strong_pixels]] = True
    strong[0] = False
    return count, labels, strong


def _checked_rows(
    read_rows: Callable[[int, int], np.ndarray], top: int, bottom: int, trailing: tuple[int, ...], channels: int | None
) -> np.ndarray:
    """``read_rows(top, bottom)`` checked to be a ``(C, bottom - top, *trailing)`` uint8 numpy array
    (``C == channels`` when given, else ``C >= 1``)."""
    rows = read_rows(top, bottom)
    expected = f"({channels or 'C'}, {bottom - top}, {', '.join(map(str, trailing))})"
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != len(trailing) + 2:
        raise TypeError(
            f"read_rows({top}, {bottom}) must return a {expected} uint8 numpy array, got "
            f"{getattr(rows, 'dtype', type(rows).__name__)} of shape {tuple(getattr(rows, 'shape', ()))}."
        )
    if rows.shape[1:] != (bottom - top, *trailing) or rows.shape[0] < 1 or rows.shape[0] != (channels or rows.shape[0]):
        raise ValueError(f"read_rows({top}, {bottom}) must return shape {expected}, got {tuple(rows.shape)}.")
    return rows


def _scaled_rows(x: np.ndarray) -> Callable[[int, int], np.ndarray]:
    """``read_rows`` of a channel-first ``(C, H, ...)`` array of any dtype, scaled to uint8 band by band
    with the whole image's range (the float temporary is band-sized)."""
    if x.dtype in (np.uint8, bool):
        lo, hi = 0.0, 255.0  # unused by to_uint8 for these dtypes
    else:
        lo, hi = float(x.min()), float(x.max())

    def read_rows(start: int, stop: int) -> np.ndarray:
        return to_uint8(x[:, start:stop], lo, hi)

    return read_rows


def _volume_uint8(volume: np.ndarray) -> np.ndarray:
    """A ``(H, W, D)`` volume as uint8 scaled with its global range, converted in slabs of slices so the
    float temporary stays small (1 byte per voxel plus a slab)."""
    if volume.dtype in (np.uint8, bool):
        return to_uint8(volume)
    read_rows = _scaled_rows(volume[None])
    out = np.empty(volume.shape, dtype=np.uint8)
    for start in range(0, volume.shape[0], _SCALE_CHUNK):
        out[start : start + _SCALE_CHUNK] = read_rows(start, start + _SCALE_CHUNK)[0]
    return out


def _edges_3d_itk(volume: np.ndarray, k: int, low: float, high: float) -> np.ndarray:
    import itk  # imported lazily: loading ITK takes seconds and 2D users never need it

    image = itk.image_from_array(np.ascontiguousarray(volume, dtype=np.float32))
    kind = itk.Image[itk.F, 3]
    canny = itk.CannyEdgeDetectionImageFilter[kind, kind].New(image)
    canny.SetVariance(_sigma(k) ** 2 if k > 1 else 0.0)
    canny.SetLowerThreshold(low / 8.0)
    canny.SetUpperThreshold(high / 8.0)
    canny.Update()
    return np.array(itk.array_view_from_image(canny.GetOutput()) > 0, dtype=bool)


def _sigma(k: int) -> float:
    return 0.3 * ((k - 1) * 0.5 - 1) + 0.8


def _edges_3d_slicewise(volume: np.ndarray, k: int, low: float, high: float) -> np.ndarray:
    out = np.zeros(volume.shape, dtype=bool)
    for axis in range(3):
        moved = np.moveaxis(volume, axis, 0)
        target = np.moveaxis(out, axis, 0)
        for i in range(moved.shape[0]):
            target[i] |= _canny_2d(np.ascontiguousarray(moved[i]), k, low, high) > 0
    return out


def edge_map(
    image: Any,
    kernel_size: int = 3,
    thresholds: Sequence[float] = (50, 100),
    channel_reduction: str = "max",
    edge_method: str = "itk",
) -> Any:
    """Edge map of a channel-first image, the score map of :func:`~monai_shf.forest.build_forest`.

    2D images go through :func:`canny_bands` (bands of ``H / 32`` rows, 0.5 to 2 Mpx, two at a time, read as views
    of ``image`` and scaled to uint8 band by band with the whole image's range): peak extra memory is the output plus band
    buffers, never a whole-image copy (see ``benchmarks/memory.py``).

    Args:
        image: ``(C, H, W)`` or ``(C, H, W, D)`` numpy array or torch tensor, any dtype and range.
        kernel_size: odd Gaussian kernel side (1 = no blur). The paper draws from {1, 3, 5, 7}.
        thresholds: Canny ``(low, high)`` hysteresis thresholds on the 8-bit scale.
        channel_reduction: ``"max"`` or ``"mean"`` (2D), see the module docstring.
        edge_method: 3D operator, ``"itk"`` (N-D Canny) or ``"slicewise"``; ignored in 2D.

    Returns:
        ``(H, W)`` / ``(H, W, D)`` bool edge map, numpy for numpy input, a tensor on the input's
        device for tensor input (pass ``to_numpy(tensor)`` to keep the edges on the CPU, e.g. for
        :func:`~monai_shf.forest.build_forest`).
    """
    check_array(image, "image", ndims=(3, 4))
    k, low, high = check_edge_args(kernel_size, thresholds)
    reduction = check_choice(channel_reduction, "channel_reduction", CHANNEL_REDUCTIONS)
    method = check_choice(edge_method, "edge_method", EDGE_METHODS)
    x = to_numpy(image)
    if x.ndim == 3:
        h, w = x.shape[1:]
        band_rows = max(1, min(max(h // _BAND_FRACTION, -(-_MIN_BAND_PIXELS // w)), _MAX_BAND_PIXELS // w))
        if h * w <= _ONE_BAND_PIXELS:
            band_rows = h
        edges = canny_bands(_scaled_rows(x), (h, w), k, (low, high), reduction, band_rows=band_rows)
    else:
        if x.shape[0] == 1:
            volume = _volume_uint8(x[0])
        else:
            volume = to_uint8(x.mean(axis=0, dtype=np.float32))
        if any(s < 3 for s in volume.shape) and method == "itk":
            method = "slicewise"  # ITK's Canny needs 3 voxels per side for its derivative stencils
        edges = (_edges_3d_itk if method == "itk" else _edges_3d_slicewise)(volume, k, low, high)
    if isinstance(image, torch.Tensor):
        return torch.from_numpy(edges).to(image.device)
    return edges


def _gaussian_3d(x: np.ndarray, k: int) -> np.ndarray:
    """OpenCV's Gaussian of side ``k`` (sigma :func:`_sigma`) along every axis of a float32 ``(n0, n1, n2)``
    array, reflect-101 borders; ``k = 1``: ``x`` unchanged."""
    if k == 1:
        return x
    out = np.empty_like(x)
    for i in range(x.shape[0]):  # the two inner axes, slice by slice
        out[i] = cv.GaussianBlur(x[i], (k, k), _sigma(k))
    flat = out.reshape(x.shape[0], -1)  # then axis 0: a (k x 1) kernel over the flattened slices
    return cv.GaussianBlur(flat, (1, k), 0, sigmaY=_sigma(k)).reshape(x.shape)


def _derivative_kernels(k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(smooth, slope)`` float32 1D kernels: OpenCV's Gaussian of side ``k`` (``[1]`` for ``k = 1``) and
    that Gaussian convolved with the central difference ``[1, 0, -1] / 2``."""
    smooth = cv.getGaussianKernel(k, _sigma(k), cv.CV_32F).ravel() if k > 1 else np.ones(1, np.float32)
    return smooth, np.convolve(smooth, np.array([0.5, 0.0, -0.5], np.float32)).astype(np.float32)


def _gradient_magnitude(planes: np.ndarray, k: int, kernels: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``|grad|`` (central differences; 0 across the image border, reflect-101) of the blurred
    uint8 ``(n0, ...)`` plane(s) as float32; ``kernels``: :func:`_derivative_kernels` of ``k``."""
    if planes.ndim == 2:
        # blur and central difference in one separable pass per axis (the slope kernel along the
        # derivative's axis, the Gaussian along the other), straight from uint8: no float copy of the
        # plane, no blurred intermediate (2x faster than blur, then Sobel). The same values: a
        # symmetric kernel keeps the reflect-101 border symmetric.
        smooth, slope = kernels
        along1 = cv.sepFilter2D(planes, cv.CV_32F, slope, smooth, borderType=cv.BORDER_REFLECT_101)
        along0 = cv.sepFilter2D(planes, cv.CV_32F, smooth, slope, borderType=cv.BORDER_REFLECT_101)
        return cv.magnitude(along1, along0)
    blurred = _gaussian_3d(planes.astype(np.float32), k)
    total = np.zeros(blurred.shape, dtype=np.float32)
    for axis in range(blurred.ndim):
        derivative = np.zeros(blurred.shape, dtype=np.float32)
        inner = [slice(None)] * blurred.ndim
        inner[axis] = slice(1, -1)
        ahead, behind = list(inner), list(inner)
        ahead[axis], behind[axis] = slice(2, None), slice(None, -2)
        np.subtract(blurred[tuple(ahead)], blurred[tuple(behind)], out=derivative[tuple(inner)])
        derivative *= derivative
        total += derivative
    total *= np.float32(0.25)
    return np.sqrt(total, out=total)


def soft_edge_bands(
    read_rows: Callable[[int, int], np.ndarray],
    shape: Sequence[int],
    kernel_size: int = 3,
    thresholds: Sequence[float] = (50, 100),
    channel_reduction: str = "max",
    band_rows: int = 512,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Soft edges of a 2D or 3D image read in bands along its first axis, into one uint8 map.

    ``read_rows(start, stop)`` returns ``(C, stop - start, *shape[1:])`` uint8 (the caller slices an
    array or reads a slide level). Each band is read with a halo of ``kernel_size // 2 + 1`` rows (what
    the blur and the central difference reach), so the result equals the whole image's exactly.

    Args:
        read_rows: ``(start, stop) -> (C, rows, *shape[1:])`` uint8 numpy array, the same ``C`` every call.
        shape: spatial shape ``(H, W)`` or ``(H, W, D)``.
        kernel_size: odd Gaussian kernel side (1 = no blur).
        thresholds: Canny ``(low, high)`` on the 8-bit scale: a gradient of ``low / 8`` grey levels
            per pixel (or more) is one full edge pixel (``high`` is unused).
        channel_reduction: ``"max"`` (the channel with the largest gradient, per pixel) or ``"mean"``
            (the gradient of the rounded channel mean).
        band_rows: rows (slices in 3D) per band, ``>= 1``. Peak extra memory on top of ``out``: up to
            three bands in flight (two computed, one read), each about
            ``(band_rows + 2 * halo) * prod(shape[1:]) * (C + 16)`` bytes (the uint8 band, two float32
            derivatives, the magnitude and the running channel maximum).
        out: optional preallocated uint8 array of ``shape`` to write into.

    Returns:
        uint8 array of ``shape``: ``round(255 * min(|grad| / (low / 8), 1))`` (``out`` when given).
    """
    if not callable(read_rows):
        raise TypeError(f"read_rows must be a callable (start, stop) -> (C, rows, ...) uint8, got {read_rows!r}.")
    if not isinstance(shape, (Sequence, np.ndarray)) or len(shape) not in (2, 3):
        raise TypeError(f"shape must be (H, W) or (H, W, D), got {shape!r}.")
    shape = tuple(check_int(side, "shape", 1) for side in shape)
    k, low, _ = check_edge_args(kernel_size, thresholds)
    reduction = check_choice(channel_reduction, "channel_reduction", CHANNEL_REDUCTIONS)
    band = check_int(band_rows, "band_rows", 1)
    out = _output_array(out, shape, np.dtype(np.uint8))
    gain = np.float32(255.0 / max(low / _SOBEL_TO_GRADIENT, 1e-6))  # 255 * g / saturation
    halo = k // 2 + 1
    height = shape[0]
    kernels = _derivative_kernels(k)
    channels = None  # C of the first band: every band must have it

    def compute(rows: np.ndarray, start: int, stop: int, top: int) -> None:
        if rows.shape[0] == 1 or reduction == "mean":
            magnitude = _gradient_magnitude(rows[0] if rows.shape[0] == 1 else _channel_mean(rows), k, kernels)
        else:
            magnitude = _gradient_magnitude(rows[0], k, kernels)
            for c in range(1, rows.shape[0]):
                np.maximum(magnitude, _gradient_magnitude(rows[c], k, kernels), out=magnitude)
        kept = magnitude[start - top : stop - top]
        # round(min(gain * |grad|, 255)) in one pass (OpenCV's saturating, rounding conversion)
        out[start:stop] = cv.convertScaleAbs(kept.reshape(kept.shape[0], -1), alpha=float(gain)).reshape(kept.shape)

    # bands are read in order by the calling thread and computed by two threads (OpenCV and numpy
    # release the GIL); at most two bands are in flight
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = deque()
        for start in range(0, height, band):
            stop = min(height, start + band)
            top, bottom = max(0, start - halo), min(height, stop + halo)
            rows = _checked_rows(read_rows, top, bottom, shape[1:], channels)
            channels = rows.shape[0]
            if len(pending) == 2:
                pending.popleft().result()
            pending.append(pool.submit(compute, rows, start, stop, top))
        while pending:
            pending.popleft().result()
    return out


def soft_edge_map(
    image: Any,
    kernel_size: int = 3,
    thresholds: Sequence[float] = (50, 100),
    channel_reduction: str = "max",
) -> Any:
    """Soft edge map of a channel-first 2D or 3D image, the forest's default score map (module docstring).

    The image is brought to 8 bits as for :func:`edge_map` (band by band, with the whole image's
    range), then :func:`soft_edge_bands` runs on bands of about 1 Mpx.

    Args:
        image: ``(C, H, W)`` or ``(C, H, W, D)`` numpy array or torch tensor, any dtype and range.
        kernel_size: odd Gaussian kernel side (1 = no blur).
        thresholds: Canny ``(low, high)``: a gradient of ``low / 8`` grey levels per pixel is one edge pixel.
        channel_reduction: ``"max"`` or ``"mean"``, as :func:`soft_edge_bands`.

    Returns:
        ``(H, W)`` / ``(H, W, D)`` uint8 map (255: one full edge pixel), numpy for numpy input, a
        tensor on the input's device for tensor input (a device tensor is computed there by
        :func:`~monai_shf.forest.torch_edges.soft_edge_maps`, equal up to one grey level at rare pixels).
        Peak extra memory: the output (1 byte per pixel) plus band buffers.
    """
    check_array(image, "image", ndims=(3, 4))
    check_edge_args(kernel_size, thresholds)
    if _device.on_accelerator(image):  # stays on its device: the torch path
        from .torch_edges import soft_edge_map_torch

        return soft_edge_map_torch(image, kernel_size, thresholds, channel_reduction)
    x = to_numpy(image)
    plane = max(1, math.prod(x.shape[2:]))
    # about 1 Mpx per band, but several halos deep (3D planes are wide: 4 slices of 512 x 512 would be
    # mostly halo at k = 7)
    band_rows = max(1, _ONE_BAND_PIXELS // plane, 4 * (int(kernel_size) // 2 + 1))
    edges = soft_edge_bands(
        _scaled_rows(x), x.shape[1:], kernel_size, thresholds, channel_reduction, band_rows=band_rows
    )
    if isinstance(image, torch.Tensor):
        return torch.from_numpy(edges).to(image.device)
    return edges


def score_map(image: Any, edges: EdgeSpec | None = None) -> Any:
    """The forest's score map of ``image`` ``(C, *spatial)`` as ``edges`` says (default :class:`EdgeSpec`):
    :func:`soft_edge_map` (``edge_kind="soft"``, uint8) or :func:`edge_map` (``"canny"``, bool)."""
    edges = EdgeSpec() if edges is None else edges
    if not isinstance(edges, EdgeSpec):
        raise TypeError(f"edges must be an EdgeSpec, got {type(edges).__name__}.")
    if edges.edge_kind == "soft":
        return soft_edge_map(image, edges.kernel_size, edges.thresholds, edges.channel_reduction)
    return edge_map(image, edges.kernel_size, edges.thresholds, edges.channel_reduction, edges.edge_method)
