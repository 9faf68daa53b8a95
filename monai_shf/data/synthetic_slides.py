"""Generated pyramidal test slides from real tissue texture: :func:`make_slide`.

A slide of any size is rendered tile by tile (through :func:`~monai_shf.slide.writer.write_pyramid`)
from one small real image, ``ihc2d/ihc.png`` of the real-data root (:func:`monai_shf.utils.find_real_data`) (immunohistochemistry of colonic glands,
haematoxylin + DAB), so that edge statistics, stain colours and structure sizes are those of real
tissue while no slide is ever held in memory:

* the texture is tiled with mirrored copies (seamless: a reflection has no jump at the border) in two
  variants, the texture and its transpose (a rotated + mirrored copy), each with its own random
  offset; a low-frequency field switches between them, so the slide is not a plain repeat;
* a second low-frequency field cuts tissue islands out of the glass background;
* a third one varies stain intensity per channel by about +-5 % (like staining/scanner variation).

The label slide (uint8 classes) is derived from the tissue itself: 0 glass and lumen, 1 tissue
(stroma, nuclei), 2 DAB-positive epithelium. Classes come from colour deconvolution of the texture
with a fixed haematoxylin/eosin/DAB matrix (Ruifrok & Johnston, the matrix of scikit-image's
``rgb2hed``), blurred, thresholded and cleaned by a morphological opening and closing, computed once
on the 512² texture and then mirrored exactly like the image: image and label agree pixel for pixel.

Levels: level ``k`` of the image is rendered from the texture area-reduced by ``2**k`` (anti-aliased,
like a scanner pyramid); level ``k`` of the label takes the class at the level-0 pixel its centre
falls on (nearest, see :func:`~monai_shf.slide.writer.level_sample_index`), with the low-frequency
fields evaluated at that level's resolution.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2 as cv
import numpy as np

from monai_shf.slide import level_sample_index, pyramid_shapes, write_pyramid
from monai_shf.slide.classes import class_record
from monai_shf.utils import find_real_data
from monai_shf.validation import check_int, check_not_input, check_output_path

__all__ = ["make_slide", "find_ihc2d", "tissue_texture", "SLIDE_CLASSES"]

SLIDE_CLASSES = ("background", "tissue", "dab_positive")

_GLASS = np.array([242, 240, 244], np.uint8)
# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB), as in scikit-image's rgb2hed
_STAIN_VECTORS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_PERIOD = 1024  # mirror tiling of a 512 texture
_COARSE = 16  # low-frequency fields are evaluated every 16 pixels and interpolated


def find_ihc2d() -> Path | None:
    """``ihc.png`` of the real-data folder (see :func:`monai_shf.utils.find_real_data`); None when absent."""
    folder = find_real_data("ihc2d", ("ihc.png",))
    return None if folder is None else folder / "ihc.png"


def _label_from_stains(rgb: np.ndarray) -> np.ndarray:
    """``(512, 512, 3)`` uint8 IHC texture -> ``(512, 512)`` uint8 classes (see the module docstring)."""
    od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0)  # optical density per channel
    vectors = _STAIN_VECTORS / np.linalg.norm(_STAIN_VECTORS, axis=1, keepdims=True)
    stains = (od.reshape(-1, 3) @ np.linalg.inv(vectors).astype(np.float32)).reshape(rgb.shape)
    dab = cv.GaussianBlur(np.ascontiguousarray(stains[..., 2]), (0, 0), 4, borderType=cv.BORDER_REFLECT)
    density = cv.GaussianBlur(od.sum(-1), (0, 0), 2, borderType=cv.BORDER_REFLECT)
    raw = np.ones(rgb.shape[:2], np.uint8)
    raw[density < 0.3] = 0  # glass/lumen: almost no absorbance
    raw[dab > 0.75] = 2  # DAB-positive epithelium
    kernel = cv.getStructuringElement(cv.MORPH_ELLIPSE, (9, 9))
    label = raw.copy()
    for cls in (2, 0):  # drop specks and fill holes of each class; what is removed becomes tissue
        mask = (raw == cls).astype(np.uint8)
        mask = cv.morphologyEx(mask, cv.MORPH_OPEN, kernel, borderType=cv.BORDER_REFLECT)
        mask = cv.morphologyEx(mask, cv.MORPH_CLOSE, kernel, borderType=cv.BORDER_REFLECT)
        label[(label == cls) & (mask == 0)] = 1
        label[mask == 1] = cls
    return label


def tissue_texture() -> tuple[np.ndarray, np.ndarray, str]:
    """The 512² texture, its label and where it comes from.

    Returns:
        ``(rgb (512, 512, 3) uint8, label (512, 512) uint8 in [0, 3), source)``: the real
        IHC image when found (:func:`find_ihc2d`), else the generated tissue of
        :func:`monai_shf.data.synthetic.synthetic_tissue_2d` (with a warning).
    """
    path = find_ihc2d()
    if path is not None:
        bgr = cv.imread(str(path), cv.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (512, 512):
            raise ValueError(f"{path} is not a readable 512x512 RGB image.")
        rgb = cv.cvtColor(bgr, cv.COLOR_BGR2RGB)
        return rgb, _label_from_stains(rgb), f"real tissue texture {path}"
    from monai_shf.data.synthetic import synthetic_tissue_2d

    warnings.warn(
        "ihc2d/ihc.png not found in the real-data root (set MONAI_SHF_DATA to the folder holding ihc2d/): the slide is built "
        "from a generated tissue texture instead of real tissue.",
        stacklevel=2,
    )
    image, label = synthetic_tissue_2d(512, seed=0, num_classes=3)
    return np.ascontiguousarray(image.transpose(1, 2, 0)), label[0], "generated tissue texture"


def _mirror_index(index: np.ndarray, n: int) -> np.ndarray:
    """Index into a texture of side ``n`` tiled with mirrored copies (period ``2 n``)."""
    m = np.mod(index, 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


class _Field:
    """A smooth random field, a sum of plane waves, roughly unit variance; evaluated at level-0
    coordinates."""

    def __init__(self, rng: np.random.Generator, periods: tuple[float, float], waves: int = 5):
        angle = rng.uniform(0, 2 * np.pi, waves)
        period = rng.uniform(*periods, waves)
        self.k = np.stack([np.sin(angle), np.cos(angle)], 1) * (2 * np.pi / period)[:, None]  # (waves, 2)
        self.phase = rng.uniform(0, 2 * np.pi, waves)
        self.scale = math.sqrt(2.0 / waves)

    def __call__(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Values on the grid ``ys x xs`` (level-0 coordinates), ``(len(ys), len(xs))`` float32."""
        out = np.zeros((len(ys), len(xs)), np.float64)
        for (ky, kx), phase in zip(self.k, self.phase):
            out += np.sin(ky * ys[:, None] + kx * xs[None, :] + phase)
        return (out * self.scale).astype(np.float32)


class _SlideRenderer:
    """Renders image and label tiles of one generated slide (thread-safe: read-only state).

    Texture tiles are views: per level and variant a mirror-tiled texture one period plus one tile
    wide is built once, and a tile is a slice of it (no gather)."""

    def __init__(self, shape: tuple[int, int], seed: int, tile: int, levels: int):
        rng = np.random.default_rng(seed)
        rgb, label, self.source = tissue_texture()
        self.shape, self.tile = shape, tile
        side = max(shape)
        self.tissue = _Field(rng, (side / 2.5, side / 1.2))
        self.variant = _Field(rng, (3000.0, 8000.0))
        self.gain = [_Field(rng, (2000.0, 6000.0)) for _ in range(3)]
        self.offsets = rng.integers(0, _PERIOD, size=(2, 2))
        variants = (rgb, np.ascontiguousarray(rgb.transpose(1, 0, 2)))
        labels = (label, np.ascontiguousarray(label.T))
        # label level 0 and every image level: (periodic texture, period), indexed [level][variant]
        self.label0 = [self._periodic(lab, 512) for lab in labels]
        self.labels = labels
        self.textures = []
        for k in range(levels):
            n = 512 >> k
            per_level = []
            for variant in variants:
                if n >= 1:
                    reduced = variant if n == 512 else cv.resize(variant, (n, n), interpolation=cv.INTER_AREA)
                else:
                    reduced = variant.reshape(-1, 3).mean(0).round().astype(np.uint8)[None, None]
                per_level.append(self._periodic(reduced, max(n, 1)))
            self.textures.append(per_level)

    def _periodic(self, texture: np.ndarray, n: int) -> np.ndarray:
        """``texture`` (side ``n``) mirror-tiled over ``2 n + tile`` pixels per axis."""
        index = _mirror_index(np.arange(2 * n + self.tile), n)
        return np.ascontiguousarray(texture[index[:, None], index[None, :]])

    def _fields(self, level: int, y0: int, x0: int, h: int, w: int, gain: bool) -> dict[str, Any]:
        """The low-frequency fields at every pixel of a tile, from a coarse grid (cheap, smooth).
        ``tissue`` and ``variant`` are bool masks, or a plain bool where the tile is on one side."""
        f = 1 << level
        # one global grid (every 16 pixels of the level) with a point of margin on each side, so the
        # bilinear interpolation is the same on both sides of a tile border (no seams)
        ny, nx = -(-h // _COARSE) + 2, -(-w // _COARSE) + 2
        ys = (y0 + (np.arange(ny) - 0.5) * _COARSE) * f
        xs = (x0 + (np.arange(nx) - 0.5) * _COARSE) * f

        def full(values: np.ndarray) -> np.ndarray:
            up = cv.resize(values, (nx * _COARSE, ny * _COARSE), interpolation=cv.INTER_LINEAR)
            return up[_COARSE : _COARSE + h, _COARSE : _COARSE + w]

        out: dict[str, Any] = {}
        for name, field in (("tissue", self.tissue), ("variant", self.variant)):
            values = field(ys, xs)
            if (values > 0).all() or (values <= 0).all():  # one side everywhere: no interpolation needed
                out[name] = bool((values > 0).all())
            else:
                out[name] = full(values) > 0
        if gain and out["tissue"] is not False:
            # absorbed light scaled by 1 +- ~5 % per channel: stain intensity variation
            out["gain"] = full(1.0 + 0.05 * np.stack([g(ys, xs) for g in self.gain], -1))
        return out

    def _texture(self, level: int, y0: int, x0: int, h: int, w: int, variant: int, label: bool) -> np.ndarray:
        f = 1 << level
        oy, ox = (int(o) for o in self.offsets[variant])
        if label and level:  # the level-0 pixel under the centre (exact decimation of level 0)
            ys = level_sample_index(y0, y0 + h, level, self.shape[0]) + oy
            xs = level_sample_index(x0, x0 + w, level, self.shape[1]) + ox
            return self.labels[variant][_mirror_index(ys, 512)[:, None], _mirror_index(xs, 512)[None, :]]
        periodic = self.label0[variant] if label else self.textures[level][variant]
        period = 2 * max(512 >> level, 1)
        my, mx = (y0 + oy // f) % period, (x0 + ox // f) % period
        return periodic[my : my + h, mx : mx + w]

    def _select(self, fields: dict[str, Any], level: int, y0: int, x0: int, h: int, w: int, label: bool) -> np.ndarray:
        """The texture (or label) of both variants, chosen per pixel by the variant field."""
        choose = fields["variant"]
        if choose is True or choose is False:
            return self._texture(level, y0, x0, h, w, 0 if choose else 1, label)
        out = self._texture(level, y0, x0, h, w, 1, label).copy()
        cv.copyTo(self._texture(level, y0, x0, h, w, 0, label), choose.view(np.uint8), out)
        return out

    def image(self, level: int, y0: int, x0: int, h: int, w: int) -> Any:
        fields = self._fields(level, y0, x0, h, w, gain=True)
        if fields["tissue"] is False:
            return _GLASS
        absorbed = cv.bitwise_not(self._select(fields, level, y0, x0, h, w, label=False))  # 255 - value
        out = cv.bitwise_not(cv.multiply(absorbed, fields["gain"], dtype=cv.CV_8U))  # (saturating, rounded)
        if fields["tissue"] is not True:
            glass = np.empty_like(out)
            glass[...] = _GLASS
            cv.copyTo(out, fields["tissue"].view(np.uint8), glass)
            out = glass
        return out

    def label(self, level: int, y0: int, x0: int, h: int, w: int) -> Any:
        fields = self._fields(level, y0, x0, h, w, gain=False)
        if fields["tissue"] is False:
            return np.uint8(0)
        out = self._select(fields, level, y0, x0, h, w, label=True)
        if fields["tissue"] is not True:
            out = out * fields["tissue"].view(np.uint8)
        return out


def make_slide(
    out: str | Path,
    size: int | Sequence[int],
    tile: int = 512,
    seed: int = 0,
    label_out: str | Path | bool | None = None,
    mpp: float = 0.25,
    quality: int = 85,
    workers: int = 2,
) -> tuple[Path, Path | None]:
    """Write a generated pyramidal RGB test slide and its label slide, tile by tile.

    Args:
        out: the slide file (``.tif``; JPEG tiles, YCbCr 4:2:0, like SVS and generic tiled TIFF
            slides); its folder must exist.
        size: level-0 side ``N`` (an ``N x N`` slide) or ``(H, W)``.
        tile: tile side (a multiple of 16).
        seed: everything random (offsets, fields) derives from it: the same seed gives the same files.
        label_out: the label slide (uint8 classes :data:`SLIDE_CLASSES`, recorded in its description as
            :mod:`monai_shf.slide.classes` does, for :func:`~monai_shf.slide.mask_to_geojson`; deflate-compressed, same
            pyramid and resolution), never ``out`` itself; ``None``: ``<out stem>_label.tif`` beside ``out``;
            ``False``: none.
        mpp: microns per pixel at level 0 (0.25: a 40x scan).
        quality: JPEG quality of the image tiles.
        workers: threads rendering and encoding.

    Returns:
        ``(slide path, label path or None)``.

    Memory: a few bands of encoded tiles and one raw tile per worker (tens of MB), whatever the size.
    """
    out = Path(out)
    shape = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else tuple(size)
    if len(shape) != 2:
        raise ValueError(f"size must be an int N or (H, W), got {size!r}.")
    shape = tuple(check_int(s, "size", 1) for s in shape)
    tile = check_int(tile, "tile", 16)
    seed = check_int(seed, "seed", 0)
    if label_out is None:
        label_out = out.with_name(out.stem + "_label.tif")
    elif label_out is False:
        label_out = None
    elif label_out is True or not isinstance(label_out, (str, Path)):
        raise TypeError(f"label_out must be a path, None or False, got {label_out!r}.")
    check_output_path(out, "out")
    if label_out is not None:
        check_output_path(label_out, "label_out")
        check_not_input(label_out, out, "label_out")
    levels = len(pyramid_shapes(shape, tile))
    renderer = _SlideRenderer(shape, seed, tile, levels)
    description = f"monai_shf generated slide: seed={seed}, {renderer.source}"
    write_pyramid(
        out,
        shape,
        3,
        np.uint8,
        renderer.image,
        tile=tile,
        compression="jpeg",
        quality=quality,
        mpp=mpp,
        description=description,
        workers=workers,
    )
    if label_out is not None:
        write_pyramid(
            label_out,
            shape,
            1,
            np.uint8,
            renderer.label,
            tile=tile,
            compression="deflate",
            mpp=mpp,
            description=f"{description}; classes {', '.join(SLIDE_CLASSES)}\n{class_record(SLIDE_CLASSES)}",
            workers=workers,
        )
        label_out = Path(label_out)
    return out, label_out
