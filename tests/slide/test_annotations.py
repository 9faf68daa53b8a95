"""Tests of monai_shf.slide.annotations: pyramidal label masks as QuPath GeoJSON annotations."""

from __future__ import annotations

import json
from pathlib import Path

import cv2 as cv
import numpy as np
import pytest

shapely = pytest.importorskip("shapely")

from monai_shf.data import make_slide  # noqa: E402
from monai_shf.slide import annotations as annotations_module  # noqa: E402
from monai_shf.slide import level_sample_index, mask_to_geojson, open_slide, trace_polygons, write_pyramid  # noqa: E402
from monai_shf.slide.classes import class_record  # noqa: E402

CLASSES = ("background", "tumour", "stroma")


def write_labels(path: Path, labels: np.ndarray, tile: int = 64, classes=CLASSES, dtype=np.uint8) -> Path:
    """``labels`` ``(H, W)`` as a pyramidal mask (levels: exact decimations), classes recorded."""
    h, w = labels.shape

    def render(level: int, y0: int, x0: int, th: int, tw: int) -> np.ndarray:
        ys, xs = level_sample_index(y0, y0 + th, level, h), level_sample_index(x0, x0 + tw, level, w)
        return labels[np.ix_(ys, xs)].astype(dtype)

    description = None if classes is None else class_record(classes)
    return write_pyramid(path, (h, w), 1, dtype, render, tile=tile, description=description)


def blobs(shape=(300, 437), seed=0) -> np.ndarray:
    """Smooth random blobs of classes 1 and 2 on background 0: shapes crossing tile borders, holes,
    islands in holes and pixels meeting only at a corner."""
    rng = np.random.default_rng(seed)
    field = cv.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 4)
    field /= field.std()
    labels = np.zeros(shape, np.uint8)
    labels[field > 0.3] = 1
    labels[field > 1.2] = 2
    labels[rng.random(shape) < 0.002] = 2  # single pixels
    return labels


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def geometries(doc: dict, name: str | None = None) -> np.ndarray:
    feats = [f for f in doc["features"] if name is None or f["properties"]["classification"]["name"] == name]
    return np.array([shapely.from_geojson(json.dumps(f["geometry"])) for f in feats], object)


def rasterise(doc: dict, shape: tuple[int, int], names=CLASSES) -> np.ndarray:
    """The features back into a label image with ``cv.fillPoly``: each polygon, then its holes (cleared),
    is filled at 4x resolution (corners on every 4th cell) and read at the cells of the pixel centres,
    two cells from any edge, so the edge pixels fillPoly also draws never decide a pixel."""
    out = np.zeros(shape, np.uint8)
    for feature in doc["features"]:
        value = names.index(feature["properties"]["classification"]["name"])
        rings = [np.asarray(r, np.float64) for r in feature["geometry"]["coordinates"]]
        x0, y0 = np.floor(rings[0].min(0)).astype(int)
        x1, y1 = np.ceil(rings[0].max(0)).astype(int)
        local = np.zeros((4 * (y1 - y0) + 1, 4 * (x1 - x0) + 1), np.uint8)
        pts = [np.round((r - [x0, y0]) * 4).astype(np.int32) for r in rings]
        cv.fillPoly(local, pts[:1], 1)
        for hole in pts[1:]:
            cv.fillPoly(local, [hole], 0)
        out[y0:y1, x0:x1][local[2::4, 2::4][: y1 - y0, : x1 - x0] > 0] = value
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@pytest.fixture(scope="module")
def blob_mask(tmp_path_factory) -> tuple[Path, np.ndarray]:
    labels = blobs()
    return write_labels(tmp_path_factory.mktemp("ann") / "blobs.tif", labels), labels


@pytest.fixture(scope="module")
def tissue_mask(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The label slide of a generated 768 x 640 slide (tissue texture; 128^2 tiles)."""
    folder = tmp_path_factory.mktemp("ann_tissue")
    _, label = make_slide(folder / "s.tif", (768, 640), tile=128, seed=1)
    with open_slide(label) as slide:
        return label, slide.read(0, (0, 0), slide.shape)[0]


def test_trace_polygons_is_exact():
    labels = np.zeros((12, 12), np.uint8)
    labels[2:8, 2:8] = 1
    labels[4, 4] = 0  # a hole
    labels[8, 8] = 1  # meets the square at a corner only: its own polygon
    polys = trace_polygons(labels, 1)
    assert shapely.is_valid(polys).all() and len(polys) == 2
    assert sorted(shapely.area(polys)) == [1.0, 35.0]
    assert shapely.equals(polys[np.argmax(shapely.area(polys))], shapely.box(2, 2, 8, 8) - shapely.box(4, 4, 5, 5))
    with pytest.raises(ValueError, match="2D integer"):
        trace_polygons(np.zeros((3, 3), np.float32), 1)


@pytest.mark.parametrize("which", ["blob_mask", "tissue_mask"])
def test_valid_areas_and_round_trip(which, request, tmp_path):
    path, labels = request.getfixturevalue(which)
    names = CLASSES if which == "blob_mask" else ("background", "tissue", "dab_positive")
    result = mask_to_geojson(path, tmp_path / "a.geojson")
    doc = read(result["path"])
    assert doc["type"] == "FeatureCollection" and doc["features"]
    geoms = geometries(doc)
    assert shapely.is_valid(geoms).all()
    assert (shapely.get_type_id(geoms) == 3).all()  # Polygons
    for value, name in enumerate(names[1:], 1):
        count = int((labels == value).sum())
        area = float(shapely.area(geometries(doc, name)).sum())
        assert area == pytest.approx(count, rel=0.005)
        assert area == count == result["area"][name]  # exact pixel edges
    back = rasterise(doc, labels.shape, names)
    for value in range(1, len(names)):
        assert dice(back == value, labels == value) >= 0.99
    np.testing.assert_array_equal(back, labels)  # and in fact exact


def test_features_are_qupath_annotations(blob_mask, tmp_path):
    path, labels = blob_mask
    result = mask_to_geojson(path, tmp_path / "a.geojson", classes={1: ("tumour", (255, 0, 0)), 2: "stroma"})
    doc = read(tmp_path / "a.geojson")
    for feature in doc["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["name"] in ("tumour", "stroma")
        color = props["classification"]["color"]
        assert len(color) == 3 and all(0 <= c <= 255 for c in color)
        if props["classification"]["name"] == "tumour":
            assert color == [255, 0, 0]
        rings = [np.asarray(r) for r in feature["geometry"]["coordinates"]]
        signed = [float(np.dot(r[:-1, 0], r[1:, 1]) - np.dot(r[1:, 0], r[:-1, 1])) for r in rings]
        assert signed[0] > 0 and all(s < 0 for s in signed[1:])  # RFC 7946 orientation
    assert sum(result["features"].values()) == len(doc["features"])


def test_disc_across_four_tiles_is_one_polygon(tmp_path):
    yy, xx = np.mgrid[:256, :256]
    r2 = (yy - 127.5) ** 2 + (xx - 127.5) ** 2
    labels = np.zeros((256, 256), np.uint8)
    labels[r2 < 50**2] = 1  # a disc centred on the corner of four 64^2 tiles...
    labels[r2 < 20**2] = 0  # ...with a hole that crosses the same four tiles
    labels[(r2 >= 70**2) & (r2 < 90**2)] = 2  # a ring around it, crossing 12 tiles
    doc = read(mask_to_geojson(write_labels(tmp_path / "m.tif", labels), tmp_path / "a.geojson")["path"])
    disc, ring = geometries(doc, "tumour"), geometries(doc, "stroma")
    assert len(disc) == 1 and len(ring) == 1
    assert shapely.get_num_interior_rings(disc[0]) == 1 and shapely.get_num_interior_rings(ring[0]) == 1
    assert shapely.area(disc[0]) == (labels == 1).sum() and shapely.area(ring[0]) == (labels == 2).sum()
    # no seam: no vertex is left over where tiles were joined (collinear points dropped)
    coords = shapely.get_coordinates(disc[0])
    assert not ((coords[:, 0] % 64 == 0) & (coords[:, 1] % 64 == 0) & (np.abs(coords - 128) > 40).any(1)).any()


def test_large_polygons_spill_holes_and_read_them_back(blob_mask, tissue_mask, tmp_path, monkeypatch):
    """With every open polygon's holes sent to the temporary file the output is the same polygons."""
    calls = []
    add = annotations_module._Spill.add

    def counting(self, *args):
        calls.append(1)
        return add(self, *args)

    for (path, labels), names in ((blob_mask, CLASSES), (tissue_mask, ("background", "tissue", "dab_positive"))):
        plain = read(mask_to_geojson(path, tmp_path / "plain.geojson")["path"])
        monkeypatch.setattr(annotations_module, "_SPILL_VERTICES", 0)
        monkeypatch.setattr(annotations_module._Spill, "add", counting)
        spilled = read(mask_to_geojson(path, tmp_path / "spilled.geojson")["path"])
        monkeypatch.undo()
        geoms = geometries(spilled)
        assert shapely.is_valid(geoms).all()
        assert len(spilled["features"]) == len(plain["features"])
        assert sorted(shapely.area(geoms)) == sorted(shapely.area(geometries(plain)))
        np.testing.assert_array_equal(rasterise(spilled, labels.shape, names), labels)
    assert calls  # holes did go to the file
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_empty_class_gives_no_feature(tmp_path):
    labels = np.zeros((100, 150), np.uint8)
    labels[10:40, 20:90] = 1
    result = mask_to_geojson(write_labels(tmp_path / "m.tif", labels), tmp_path / "a.geojson")
    doc = read(tmp_path / "a.geojson")
    assert result["features"] == {"tumour": 1, "stroma": 0}
    assert {f["properties"]["classification"]["name"] for f in doc["features"]} == {"tumour"}
    empty = mask_to_geojson(write_labels(tmp_path / "z.tif", np.zeros((80, 80), np.uint8)), tmp_path / "z.geojson")
    assert read(empty["path"])["features"] == [] and empty["features"] == {"tumour": 0, "stroma": 0}


def test_min_area_drops_small_polygons(tmp_path):
    labels = np.zeros((200, 200), np.uint8)
    labels[10:110, 10:110] = 1  # 10000 px, across four tiles
    labels[150:153, 150:153] = 1  # 9 px
    labels[170:180, 20:30] = 2  # 100 px
    path = write_labels(tmp_path / "m.tif", labels)
    assert mask_to_geojson(path, tmp_path / "a.geojson")["features"] == {"tumour": 2, "stroma": 1}
    result = mask_to_geojson(path, tmp_path / "b.geojson", min_area=50)
    assert result["features"] == {"tumour": 1, "stroma": 1} and result["area"]["tumour"] == 10000
    assert mask_to_geojson(path, tmp_path / "c.geojson", min_area=101)["features"] == {"tumour": 1, "stroma": 0}


def test_simplify_reduces_vertices(tissue_mask, tmp_path):
    path, labels = tissue_mask
    names = ("background", "tissue", "dab_positive")
    exact = read(mask_to_geojson(path, tmp_path / "a.geojson")["path"])
    simple = read(mask_to_geojson(path, tmp_path / "b.geojson", simplify=1.5)["path"])
    n_exact = shapely.get_num_coordinates(geometries(exact)).sum()
    n_simple = shapely.get_num_coordinates(geometries(simple)).sum()
    assert n_simple < 0.7 * n_exact
    assert shapely.is_valid(geometries(simple)).all()
    back = rasterise(simple, labels.shape, names)
    for value in (1, 2):
        assert dice(back == value, labels == value) >= 0.97


def test_reduced_level_is_in_level0_pixels(tmp_path):
    labels = np.zeros((256, 320), np.uint8)
    labels[32:160, 64:288] = 1
    path = write_labels(tmp_path / "m.tif", labels)
    result = mask_to_geojson(path, tmp_path / "a.geojson", level=1)
    assert result["level"] == 1
    (geom,) = geometries(read(result["path"]), "tumour")
    np.testing.assert_allclose(shapely.bounds(geom), [64, 32, 288, 160])
    assert shapely.area(geom) == (labels == 1).sum()
    with pytest.raises(ValueError, match="out of range"):
        mask_to_geojson(path, tmp_path / "b.geojson", level=9)


def test_an_open_slide_is_left_open(blob_mask, tmp_path):
    path, _ = blob_mask
    with open_slide(path) as slide:
        mask_to_geojson(slide, tmp_path / "a.geojson")
        assert slide.read(0, (0, 0), (4, 4)).shape == (1, 4, 4)


def test_bad_input_names_the_file_and_writes_nothing(blob_mask, tmp_path):
    path, labels = blob_mask
    unnamed = write_labels(tmp_path / "unnamed.tif", labels, classes=None)
    with pytest.raises(ValueError, match=r"unnamed\.tif records no class names"):
        mask_to_geojson(unnamed, tmp_path / "a.geojson")
    assert mask_to_geojson(unnamed, tmp_path / "a.geojson", classes=list(CLASSES))["features"]["stroma"] > 0
    rgb, _ = make_slide(tmp_path / "rgb.tif", 256, tile=128, label_out=False)
    with pytest.raises(ValueError, match=r"rgb\.tif holds 3 channel\(s\) of uint8"):
        mask_to_geojson(rgb, tmp_path / "b.geojson")
    wide = write_labels(tmp_path / "wide.tif", labels, dtype=np.uint16)
    with pytest.raises(ValueError, match=r"wide\.tif holds 1 channel\(s\) of uint16"):
        mask_to_geojson(wide, tmp_path / "b.geojson")
    with pytest.raises(ValueError, match="does not exist"):
        mask_to_geojson(path, tmp_path / "nowhere" / "b.geojson")
    with pytest.raises(ValueError, match="is the input"):
        mask_to_geojson(path, path)
    with pytest.raises(ValueError, match=r"blobs\.tif holds label 2 .* classes does not name"):
        mask_to_geojson(path, tmp_path / "b.geojson", classes={1: "tumour"})  # fails mid-way
    with pytest.raises(ValueError, match="min_area"):
        mask_to_geojson(path, tmp_path / "b.geojson", min_area=-1)
    with pytest.raises(TypeError, match="simplify"):
        mask_to_geojson(path, tmp_path / "b.geojson", simplify="1")
    with pytest.raises(ValueError, match="slide file not found"):
        mask_to_geojson(tmp_path / "missing.tif", tmp_path / "b.geojson")
    assert not (tmp_path / "b.geojson").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    assert (labels == read_level0(path)).all()  # the mask is untouched


def read_level0(path: Path) -> np.ndarray:
    with open_slide(path) as slide:
        return slide.read(0, (0, 0), slide.shape)[0]
