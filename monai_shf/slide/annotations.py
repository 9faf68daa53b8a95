"""Whole-slide label masks as QuPath annotations: :func:`mask_to_geojson`.

A pyramidal uint8 label mask (:func:`~monai_shf.slide.write_slide_mask`, the label slide of
:func:`~monai_shf.data.make_slide`, or any single-channel uint8 label TIFF with the class names
given) becomes a GeoJSON ``FeatureCollection`` of polygons with holes, one ``Feature`` per
4-connected region of a class, which QuPath imports as annotations (File > Import objects). The mask
is read tile by tile from one pyramid level; the slide is never held whole.

**Tracing: exact pixel edges.** Coordinates are pixel *corners*: pixel (row ``r``, column ``c``) is
the square ``x in [c, c + 1], y in [r, r + 1]``, and a polygon is the union of its pixels' squares,
so its area equals its pixel count. Per tile and class the binary tile is upsampled 2x (every pixel
a 2x2 block, plus a 1-cell zero border) and traced by OpenCV's ``findContours`` (``RETR_CCOMP``:
outer borders and their holes). A traced point is the centre of a border cell; in the upsampled
image a region's first cell along an axis is odd and its last one even (after the border), so
``cell // 2`` is exactly the pixel corner the cell touches, and the contour of cell centres maps
vertex for vertex onto the pixel-edge outline. Where two pixels meet only at a corner OpenCV joins
them (8-connectivity) and the mapped ring pinches there; shapely's ``make_valid`` splits it into
polygons touching at that point. Per tile about 9 bytes per tile pixel (the tile, the upsampled
class image, OpenCV's copy).

**Merging across tiles.** A polygon touching no tile border inside the slide is final and written at
once. The others wait per class; at the end of each tile row they are unioned with the *open*
polygons of the rows above (those touching the line below the previous row). Edges on a tile border
get a vertex at every pixel corner, so pieces on both sides share their edges vertex for vertex and
``coverage_union_all`` joins them in linear time (``union_all`` where that fails). A merged polygon
that does not reach the bottom of the row can grow no more and is written; the others stay open.

**Memory: the open polygons.** The open polygons are those crossing the line below the current row:
for regions smaller than a tile row's band that is proportional to the slide's width. A region larger
than that (a tissue region of a 64K² slide spans tens of thousands of rows and holds 10⁵ holes) stays
open for long: once an open polygon holds more than ``_SPILL_VERTICES`` vertices, its holes, which are
all final (a hole of an open polygon lies above the line, and later rows only add area below it), move
to an unnamed temporary file in the output folder and are joined back when the polygon is written. Its
outline stays in memory, so such regions still cost memory in proportion to their outline's length
(see ``docs/decisions.md``).

**Output.** Coordinates are level-0 pixel corners: a level-``k`` corner ``(x, y)`` is scaled by the
level's downsample per axis (``Slide.level_scales``) and clipped to the level-0 extent. ``simplify``
(level-0 pixels) is shapely's topology-preserving simplification of each written polygon (holes
that went to the file are simplified on their own). Exterior rings are counterclockwise and holes
clockwise (RFC 7946, x right and y up). The file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2 as cv
import numpy as np

from monai_shf.utils import atomic_write
from monai_shf.validation import check_int, check_not_input, check_output_path

from .base import Slide
from .classes import class_color, normalize_classes, read_class_record
from .reader import owned_slide

__all__ = ["mask_to_geojson", "trace_polygons"]

_SPILL_VERTICES = 20_000
"""An open polygon with more vertices than this moves its holes to the temporary file."""

INSTALL_HINT = "pip install 'monai_shf[annotations]'"


def _shapely() -> Any:
    try:
        import shapely
    except ImportError:
        raise ImportError(f"mask_to_geojson needs shapely >= 2.0: {INSTALL_HINT}.") from None
    if int(shapely.__version__.split(".")[0]) < 2:
        raise ImportError(f"mask_to_geojson needs shapely >= 2.0, found {shapely.__version__}: {INSTALL_HINT}.")
    return shapely


# --------------------------------------------------------------------------------------------- tracing


def _trace(
    shapely: Any,
    tile: np.ndarray,
    value: int,
    y0: int,
    x0: int,
    seams: tuple = ((), ()),
    buffer: np.ndarray | None = None,
) -> np.ndarray:
    """Polygons (pixel-corner coordinates, offset by ``(y0, x0)``) of the pixels of ``tile`` ``(h, w)``
    equal to ``value``: a 1D object array of valid shapely Polygons. ``seams``: ``(xs, ys)``, the tile
    border lines inside the slide, whose edges get a vertex at every pixel corner (:func:`_densify`).
    ``buffer``: uint8, at least ``(2 h + 2, 2 w + 2)``, reused across tiles."""
    h, w = tile.shape
    if buffer is None:
        buffer = np.empty((2 * h + 2, 2 * w + 2), np.uint8)
    up = buffer[: 2 * h + 2, : 2 * w + 2]  # 2x blocks and a 1-cell zero border
    up[0], up[-1], up[:, 0], up[:, -1] = 0, 0, 0, 0
    inner = up[1:-1, 1:-1]
    for dy in (0, 1):
        for dx in (0, 1):
            np.equal(tile, value, out=inner[dy::2, dx::2], casting="unsafe")
    contours, hierarchy = cv.findContours(up, cv.RETR_CCOMP, cv.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.empty(0, object)
    n = len(contours)
    parent = hierarchy[0][:, 3]
    group = np.where(parent < 0, np.arange(n), parent)  # a hole belongs to its outer border
    order = np.lexsort((parent >= 0, group))  # per polygon: its shell, then its holes
    counts = np.fromiter((len(contours[i]) for i in order), np.int64, n)
    points = np.concatenate([contours[i] for i in order]).reshape(-1, 2).astype(np.int64) >> 1  # cell -> corner
    points += np.array([x0, y0], np.int64)
    ring = np.repeat(np.arange(n), counts)
    keep = np.ones(len(points), bool)  # consecutive repeats (two cells mapped onto one corner)
    keep[1:] = (points[1:] != points[:-1]).any(1) | (ring[1:] != ring[:-1])
    points, ring = points[keep], ring[keep]
    if len(seams[0]) or len(seams[1]):
        points, ring = _densify(points, ring, *seams)
    rings = shapely.linearrings(points.astype(np.float64), indices=ring)
    sorted_group = group[order]
    polygon = np.cumsum(np.r_[True, sorted_group[1:] != sorted_group[:-1]]) - 1
    return _valid(shapely, shapely.polygons(rings, indices=polygon))


def _densify(points: np.ndarray, ring: np.ndarray, xs: Any, ys: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ring vertices ``(n, 2)`` (rings numbered by ``ring`` ``(n,)``, consecutive, implicitly closed) with
    a vertex added at every integer point of the edges lying on a seam (vertical line ``x in xs``,
    horizontal ``y in ys``)."""
    n = len(points)
    start = np.r_[True, ring[1:] != ring[:-1]]
    nxt = np.arange(1, n + 1)
    last = np.r_[start[1:], True]
    nxt[last] = np.flatnonzero(start)[ring[last]]
    d = points[nxt] - points
    seam = ((d[:, 0] == 0) & np.isin(points[:, 0], xs)) | ((d[:, 1] == 0) & np.isin(points[:, 1], ys))
    if not seam.any():
        return points, ring
    reps = np.where(seam, np.abs(d).sum(1), 1)
    idx = np.repeat(np.arange(n), reps)
    k = np.arange(len(idx)) - np.repeat(np.cumsum(reps) - reps, reps)
    return points[idx] + k[:, None] * np.sign(d)[idx], ring[idx]


def _box(shapely: Any, y0: int, x0: int, h: int, w: int, seams: tuple) -> np.ndarray:
    """The tile ``[x0, x0 + w] x [y0, y0 + h]`` as one Polygon (a 1-element object array), seam edges densified."""
    points = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]], np.int64)
    points, _ = _densify(points, np.zeros(4, np.int64), *seams)
    return np.array([shapely.polygons(shapely.linearrings(points.astype(np.float64)))], object)


def _valid(shapely: Any, polygons: np.ndarray) -> np.ndarray:
    """``polygons`` with the invalid ones (rings pinched at a corner) split into valid Polygons."""
    bad = ~shapely.is_valid(polygons)
    if not bad.any():
        return polygons
    try:
        fixed = shapely.make_valid(polygons[bad], method="structure", keep_collapsed=False)
    except TypeError:  # shapely 2.0: the linework method (the same parts for pinched rings)
        fixed = shapely.make_valid(polygons[bad])
    fixed = shapely.get_parts(fixed)
    fixed = fixed[shapely.get_type_id(fixed) == 3]  # Polygons (collapsed lines and points dropped)
    return np.concatenate([polygons[~bad], fixed])


def trace_polygons(labels: Any, value: int) -> np.ndarray:
    """Exact pixel-edge polygons of the pixels of a 2D label array equal to ``value``.

    Args:
        labels: ``(H, W)`` integer array (numpy).
        value: the label to trace.

    Returns:
        1D object array of valid shapely Polygons (with holes) in pixel-corner coordinates (``x`` the
        column, ``y`` the row; pixel ``(r, c)`` covers ``[c, c + 1] x [r, r + 1]``), one per 4-connected
        region; their areas sum to the number of pixels equal to ``value``.

    Raises:
        ValueError: ``labels`` is not a 2D integer array.
        ImportError: shapely is not installed.
    """
    shapely = _shapely()
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "biu":
        raise ValueError(f"labels must be a 2D integer array, got shape {labels.shape} and dtype {labels.dtype}.")
    return _trace(shapely, labels, check_int(value, "value"), 0, 0)


# --------------------------------------------------------------------------------------------- holes on disk


class _Spill:
    """Final holes of large open polygons, in an unnamed temporary file (deleted when closed). A block
    (one polygon, one row) is its ring vertex counts (int64) then their vertices (float64 ``x, y``),
    known by ``(offset, rings, vertices, area)``."""

    def __init__(self, folder: Path):
        self.file = tempfile.TemporaryFile(dir=folder)

    def add(self, shapely: Any, rings: np.ndarray) -> tuple[int, int, int, float]:
        coords, which = shapely.get_coordinates(rings, return_index=True)
        counts = np.bincount(which, minlength=len(rings)).astype(np.int64)
        self.file.seek(0, os.SEEK_END)
        offset = self.file.tell()
        self.file.write(counts.tobytes())
        self.file.write(np.ascontiguousarray(coords, np.float64).tobytes())
        return offset, len(rings), len(coords), float(shapely.area(shapely.polygons(rings)).sum())

    def rings(self, block: tuple[int, int, int, float]) -> Iterator[np.ndarray]:
        offset, n, total, _ = block
        self.file.seek(offset)
        counts = np.frombuffer(self.file.read(8 * n), np.int64)
        coords = np.frombuffer(self.file.read(16 * total), np.float64).reshape(-1, 2)
        yield from np.split(coords, np.cumsum(counts)[:-1])

    def close(self) -> None:
        self.file.close()


# --------------------------------------------------------------------------------------------- writing


class _Output:
    """The GeoJSON file being written: Features are appended as polygons are finished."""

    def __init__(self, shapely: Any, fh: Any, spill: _Spill, classes: dict, scale: tuple, extent: tuple):
        self.shapely, self.fh, self.spill = shapely, fh, spill
        self.scale = np.array(scale, np.float64)  # (sx, sy): level-0 pixels per level pixel
        self.bound = np.array(extent, np.float64)  # (W0, H0)
        self.min_area, self.simplify = 0.0, 0.0
        self.first = True
        self.properties = {
            value: json.dumps(
                {
                    "objectType": "annotation",
                    "classification": {"name": name, "color": list(class_color(value, color))},
                },
                ensure_ascii=False,
            )
            for value, (name, color) in classes.items()
        }
        self.count = dict.fromkeys(classes, 0)
        self.area = dict.fromkeys(classes, 0.0)
        fh.write('{"type": "FeatureCollection", "features": [\n')

    def _level0(self, geoms: np.ndarray) -> np.ndarray:
        """Level pixel corners -> level-0 pixel corners, clipped to the level-0 extent."""
        if (self.scale == 1).all():
            return geoms
        return self.shapely.transform(geoms, lambda xy: np.minimum(xy * self.scale, self.bound))

    def _finish(self, geoms: np.ndarray) -> np.ndarray:
        """Level-0 polygons simplified (at least their collinear vertices dropped), valid, oriented."""
        shapely = self.shapely
        if self.simplify > 0:
            geoms = _valid(shapely, shapely.simplify(geoms, self.simplify, preserve_topology=True))
        else:  # Douglas-Peucker with tolerance 0 drops collinear vertices only: the same point set
            geoms = shapely.simplify(geoms, 0.0, preserve_topology=False)
        geoms = geoms[(shapely.get_type_id(geoms) == 3) & ~shapely.is_empty(geoms)]
        if hasattr(shapely, "orient_polygons"):  # shapely >= 2.1
            return shapely.orient_polygons(geoms, exterior_cw=False)
        from shapely.geometry.polygon import orient

        return np.array([orient(g, 1.0) for g in geoms], object)

    def _write(self, geometry: str, value: int) -> None:
        self.fh.write(("" if self.first else ",\n") + '{"type": "Feature", "geometry": ' + geometry)
        self.fh.write(', "properties": ' + self.properties[value] + "}")
        self.first = False

    def emit(self, value: int, geoms: np.ndarray, blocks: list[list] | None = None) -> None:
        """Write finished polygons ``(n,)`` of class ``value`` (level coordinates); ``blocks``: per
        polygon, its holes in the spill file."""
        if not len(geoms):
            return
        shapely = self.shapely
        geoms = self._level0(np.asarray(geoms, object))
        spilled = np.array([bool(b) for b in blocks], bool) if blocks is not None else np.zeros(len(geoms), bool)
        level_area = float(self.scale.prod())
        areas = shapely.area(geoms)
        for i in np.flatnonzero(spilled):
            areas[i] -= sum(block[3] for block in blocks[i]) * level_area
        keep = areas >= self.min_area
        plain = keep & ~spilled
        if plain.any():
            parts = self._finish(geoms[plain])
            for text in shapely.to_geojson(parts):
                self._write(text, value)
            self.count[value] += len(parts)
            self.area[value] += float(areas[plain].sum())
        for i in np.flatnonzero(keep & spilled):
            self._emit_spilled(value, geoms[i], blocks[i], float(areas[i]))

    def _emit_spilled(self, value: int, geom: Any, blocks: list, area: float) -> None:
        """Write one polygon whose holes (some) wait in the spill file: the polygon in memory, then
        those holes, read back block by block, appended to its ``coordinates``."""
        shapely = self.shapely
        parts = self._finish(np.array([geom], object))
        if not len(parts):  # simplified away
            return
        if len(parts) != 1:  # simplified into several (never without simplify): the holes go to the largest
            parts = parts[np.argsort(-shapely.area(parts))]
            for text in shapely.to_geojson(parts[1:]):
                self._write(text, value)
        text = shapely.to_geojson(parts[0])  # ...]]]} : the last ring, the coordinates, the object
        self.fh.write(("" if self.first else ",\n") + '{"type": "Feature", "geometry": ' + text[:-2])
        self.first = False
        for block in blocks:
            holes = np.array([shapely.polygons(ring) for ring in self.spill.rings(block)], object)
            for hole in self._finish(self._level0(holes)):  # counterclockwise: reversed below
                coords = shapely.get_coordinates(shapely.get_exterior_ring(hole))[::-1]
                self.fh.write("," + json.dumps(coords.tolist(), separators=(",", ":")))
        self.fh.write(']}, "properties": ' + self.properties[value] + "}")
        self.count[value] += len(parts)
        self.area[value] += area

    def close(self) -> None:
        self.fh.write("\n]}\n")


# --------------------------------------------------------------------------------------------- merging


class _Frontier:
    """Open polygons of one class (those touching the line below the last finished tile row), each
    with the blocks of its holes in the spill file, and the current row's pieces touching a tile border."""

    def __init__(self, shapely: Any, value: int, output: _Output):
        self.shapely, self.value, self.output = shapely, value, output
        self.geoms: list[Any] = []
        self.blocks: list[list] = []
        self.pending: list[Any] = []

    def end_row(self, y1: int, last: bool) -> None:
        """Merge the row's pieces with the open polygons; write what is finished; spill large holes."""
        shapely = self.shapely
        items = np.array(self.geoms + self.pending, object)
        blocks = self.blocks + [[] for _ in self.pending]
        self.pending = []
        if not len(items):
            self.geoms, self.blocks = [], []
            return
        a, b = shapely.STRtree(items).query(items)  # boxes that meet another's: merged, the rest pass
        involved = np.zeros(len(items), bool)
        involved[a[a != b]] = True
        parts, part_blocks = items[~involved], [blocks[i] for i in np.flatnonzero(~involved)]
        if involved.any():
            merged = items[involved]
            try:
                union = shapely.get_parts(shapely.coverage_union_all(merged))
                exact = abs(float(shapely.area(union).sum()) - float(shapely.area(merged).sum())) < 0.5
            except shapely.errors.GEOSException:
                exact = False
            if not exact:  # not a clean coverage: the general overlay
                union = shapely.get_parts(shapely.union_all(merged))
            new_blocks: list[list] = [[] for _ in union]
            carried = [i for i in np.flatnonzero(involved) if blocks[i]]
            if carried:  # an item's blocks follow it into the part holding one of its interior points
                which, part = shapely.STRtree(union).query(shapely.point_on_surface(items[carried]), predicate="within")
                for w, p in zip(which.tolist(), part.tolist()):
                    new_blocks[p] += blocks[carried[w]]
                if len(which) != len(carried):
                    raise RuntimeError("internal error: an open polygon's spilled holes lost their polygon.")
            parts = np.concatenate([parts, union])
            part_blocks += new_blocks
        still_open = (shapely.bounds(parts)[:, 3] >= y1) & (not last)
        self.output.emit(self.value, parts[~still_open], [part_blocks[i] for i in np.flatnonzero(~still_open)])
        self.geoms = list(parts[still_open])
        self.blocks = [part_blocks[i] for i in np.flatnonzero(still_open)]
        for i, geom in enumerate(self.geoms):
            holes = int(shapely.get_num_interior_rings(geom))
            if holes and shapely.get_num_coordinates(geom) > _SPILL_VERTICES:
                rings = shapely.get_interior_ring(np.full(holes, geom, object), np.arange(holes))
                final = shapely.bounds(rings)[:, 3] < y1  # (one touching the line at a point stays)
                if final.any():
                    self.blocks[i] = self.blocks[i] + [self.output.spill.add(shapely, rings[final])]
                    self.geoms[i] = shapely.polygons(shapely.get_exterior_ring(geom), holes=rings[~final])


# --------------------------------------------------------------------------------------------- API


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    if not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def mask_to_geojson(
    mask: str | os.PathLike | Slide,
    out: str | os.PathLike,
    level: int = 0,
    classes: Any = None,
    min_area: float = 0,
    simplify: float = 0.0,
    tile: int | None = None,
) -> dict[str, Any]:
    """Polygons of every class of a pyramidal label mask, as a QuPath-importable GeoJSON file.

    Args:
        mask: a single-channel uint8 label slide (a path :func:`~monai_shf.slide.open_slide` reads, or
            an open :class:`~monai_shf.slide.Slide`): a mask of :func:`~monai_shf.slide.write_slide_mask`,
            the label slide of :func:`~monai_shf.data.make_slide`, or another label TIFF with ``classes``.
        out: the ``.geojson`` file; its folder must exist; not the mask. Written atomically.
        level: the pyramid level traced (0: full resolution; a reduced level is faster and coarser, its
            coordinates still in level-0 pixels).
        classes: names (and colours) of the label values: ``{value: name}``, ``{value: (name, (r, g,
            b))}`` or a list of the names of labels 0, 1, 2, ... (see
            :func:`~monai_shf.slide.classes.normalize_classes`). ``None``: the names recorded in the mask
            (:mod:`monai_shf.slide.classes`). Label 0 is the background and gets no annotation; every
            other value found in the mask must be named.
        min_area: polygons smaller than this (level-0 pixels², holes subtracted, before simplification)
            are left out; holes are kept whatever their size.
        simplify: simplification tolerance in level-0 pixels (0: the exact pixel outline).
        tile: side of the traced tiles; ``None``: the level's storage tiles (512 in our masks), 512
            when those are not between 16 and 4096.

    Returns:
        a dict: ``path`` (the GeoJSON file), ``features`` and ``area`` (per class name: polygons written
        and their area in level-0 pixels², before simplification), ``level``, ``seconds``.

    GeoJSON: a ``FeatureCollection`` of ``Polygon`` Features (one per 4-connected region of a class,
    holes included), ``properties: {"objectType": "annotation", "classification": {"name": ...,
    "color": [r, g, b]}}``; coordinates ``[x, y]`` in level-0 pixel corners (pixel ``(r, c)`` covers
    ``[c, c + 1] x [r, r + 1]``), so at level 0 a class's area equals its pixel count.

    Memory: about 9 bytes per pixel of one tile, plus the polygons crossing the current tile row's
    lower border, the holes of large ones moved to a temporary file (see the module docstring): not the
    slide's pixels, but the outline of a region as large as the slide is held while it is open.

    Raises:
        ValueError: the output folder does not exist or ``out`` is the mask; the mask is not a
            single-channel uint8 label image, records no class names while ``classes`` is None, or holds a
            label value ``classes`` does not name; a level out of range. Each names the file.
        ImportError: shapely is not installed (``pip install 'monai_shf[annotations]'``).
    """
    start = time.perf_counter()
    shapely = _shapely()
    out = check_output_path(out, "out")
    if not isinstance(mask, (str, os.PathLike, Slide)):
        raise TypeError(f"mask must be a label slide path or a Slide, got {type(mask).__name__}.")
    check_not_input(out, mask, "out")
    min_area, simplify = _number(min_area, "min_area"), _number(simplify, "simplify")
    named = None if classes is None else normalize_classes(classes)
    tile = None if tile is None else check_int(tile, "tile", 16)
    with owned_slide(mask, cache_bytes=0) as slide:
        mask_path = Path(slide.path)
        if slide.num_channels != 1 or np.dtype(slide.dtype) != np.uint8:
            raise ValueError(
                f"{mask_path} holds {slide.num_channels} channel(s) of {np.dtype(slide.dtype).name}: expected a "
                "single-channel uint8 label mask (threshold probability masks into labels first)."
            )
        if named is None:
            named = read_class_record(mask_path)
        if named is None:
            raise ValueError(
                f"{mask_path} records no class names (not a label mask monai_shf wrote with classes): pass "
                "classes, e.g. {1: 'tumour', 2: 'stroma'} (mask-to-geojson --classes background,tumour,stroma)."
            )
        level = slide.check_level(level)
        storage = slide.tile_shape(level)
        if tile is not None:
            tiles = (tile, tile)
        else:
            tiles = tuple(storage) if 16 <= min(storage) and max(storage) <= 4096 else (512, 512)
        stats: dict[str, Any] = {}

        def write(tmp: str) -> None:
            spill = _Spill(out.parent)
            try:
                with open(tmp, "w", encoding="utf-8") as fh:
                    sy, sx = slide.level_scales[level]
                    h0, w0 = slide.shape
                    output = _Output(shapely, fh, spill, named, (sx, sy), (w0, h0))
                    output.min_area, output.simplify = min_area, simplify
                    _trace_slide(shapely, slide, level, tiles, named, output, mask_path)
                    output.close()
                    stats.update(count=output.count, area=output.area)
            finally:
                spill.close()

        atomic_write(out, write)
    names = {value: name for value, (name, _) in named.items() if value != 0}
    return {
        "path": out,
        "features": {name: stats["count"][value] for value, name in names.items()},
        "area": {name: stats["area"][value] for value, name in names.items()},
        "level": level,
        "seconds": time.perf_counter() - start,
    }


def _trace_slide(
    shapely: Any, slide: Slide, level: int, tiles: tuple, named: dict, output: _Output, mask_path: Path
) -> None:
    """Trace ``level`` of ``slide`` tile by tile (row-major) into ``output``."""
    allowed = np.zeros(256, bool)
    allowed[list(named)] = True
    allowed[0] = True
    fronts = {value: _Frontier(shapely, value, output) for value in named if value != 0}
    height, width = slide.level_shapes[level]
    buffer = np.empty((2 * tiles[0] + 2, 2 * tiles[1] + 2), np.uint8)
    for y0 in range(0, height, tiles[0]):
        h = min(tiles[0], height - y0)
        for x0 in range(0, width, tiles[1]):
            w = min(tiles[1], width - x0)
            data = slide.read(level, (y0, x0), (h, w))[0]
            present = np.flatnonzero(np.bincount(data.ravel(), minlength=256))
            unknown = present[~allowed[present]]
            if len(unknown):
                raise ValueError(
                    f"{mask_path} holds label {int(unknown[0])} (level {level}, tile at row {y0}, column {x0}), "
                    f"which classes does not name (named: {sorted(named)})."
                )
            inside = (x0 > 0, y0 > 0, x0 + w < width, y0 + h < height)  # tile borders inside the slide
            seams = (
                [x for x, on in ((x0, inside[0]), (x0 + w, inside[2])) if on],
                [y for y, on in ((y0, inside[1]), (y0 + h, inside[3])) if on],
            )
            for value in present[present > 0].tolist():
                if len(present) == 1:  # one value everywhere: the tile itself
                    pieces = _box(shapely, y0, x0, h, w, seams)
                else:
                    pieces = _trace(shapely, data, value, y0, x0, seams, buffer)
                minx, miny, maxx, maxy = shapely.bounds(pieces).T
                border = (
                    (inside[0] & (minx <= x0))
                    | (inside[1] & (miny <= y0))
                    | (inside[2] & (maxx >= x0 + w))
                    | (inside[3] & (maxy >= y0 + h))
                )
                output.emit(value, pieces[~border])
                fronts[value].pending.extend(pieces[border].tolist())
        for front in fronts.values():
            front.end_row(y0 + h, last=y0 + h >= height)
