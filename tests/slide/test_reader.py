"""open_slide / TiffSlide: layouts, lazy tile reads, cache, pickling, workers, bad files."""

from __future__ import annotations

import pickle
import struct
import zlib

import numpy as np
import pytest
import tifffile
import torch
from slide_files import area_pyramid, texture, write_raw_tiff, write_tiff_pyramid

from monai_shf.slide import Slide, open_slide, tiff_backend


def _chw(level: np.ndarray) -> np.ndarray:
    return level.transpose(2, 0, 1) if level.ndim == 3 else level[None]


@pytest.mark.parametrize("layout", ["flat", "subifd", "ome", "svs"])
def test_layouts_levels_mpp_and_reads(tmp_path, rgb_image, layout):
    levels = area_pyramid(rgb_image, 4)
    path = write_tiff_pyramid(tmp_path / f"s.{layout}.tif", levels, tile=64, layout=layout, mpp=0.25)
    with open_slide(path) as slide:
        assert isinstance(slide, Slide)
        assert slide.shape == (512, 768) and slide.num_channels == 3 and slide.dtype == np.uint8
        assert slide.level_shapes == ((512, 768), (256, 384), (128, 192), (64, 96))
        assert slide.downsamples == (1.0, 2.0, 4.0, 8.0)
        assert slide.mpp == pytest.approx((0.25, 0.25))
        rng = np.random.default_rng(0)
        for k, level in enumerate(levels):
            h, w = level.shape[:2]
            y, x = int(rng.integers(0, h - 20)), int(rng.integers(0, w - 30))
            got = slide.read(k, (y, x), (min(90, h - y), min(130, w - x)))
            assert got.shape == (3, min(90, h - y), min(130, w - x)) and got.flags.c_contiguous
            np.testing.assert_array_equal(got, _chw(level)[:, y : y + got.shape[1], x : x + got.shape[2]])


def test_non_power_of_two_downsamples_and_jpeg(tmp_path, rgb_image):
    """Aperio-like 4x levels of a size not divisible by 4: downsamples like 4.016 come from the shapes."""
    import cv2 as cv

    image = rgb_image[:500, :750]
    levels = [image, cv.resize(image, (186, 124), interpolation=cv.INTER_AREA)]
    path = write_tiff_pyramid(tmp_path / "a.svs", levels, tile=64, layout="svs", compression="jpeg", mpp=0.499)
    with open_slide(path) as slide:
        assert slide.level_shapes == ((500, 750), (124, 186))
        sy, sx = slide.level_scales[1]
        assert sy == pytest.approx(500 / 124) and sx == pytest.approx(750 / 186)
        assert slide.downsamples[1] == pytest.approx((500 / 124 + 750 / 186) / 2)
        assert slide.mpp == pytest.approx((0.499, 0.499))
        ref = tifffile.imread(path, series=0, level=1)
        got = slide.read(1, (10, 20), (100, 150))
        np.testing.assert_array_equal(got, ref[10:110, 20:170].transpose(2, 0, 1))


def test_odd_sizes_snap_to_integer_factors(tmp_path):
    levels = area_pyramid(texture(301, 203), 3)  # 150 x 101, 75 x 50
    path = write_tiff_pyramid(tmp_path / "odd.tif", levels, tile=32)
    with open_slide(path) as slide:
        assert slide.level_scales == ((1.0, 1.0), (2.0, 2.0), (4.0, 4.0))


def test_reads_decode_only_touched_tiles_once(exact_slide):
    path, _ = exact_slide
    with open_slide(path) as slide:
        slide.read(0, (70, 100), (60, 60))  # rows 70..129, cols 100..159: 2 x 2 of the 64-px tiles
        assert slide.tile_decodes == 4 and slide.level_decodes[0] == 4
        slide.read(0, (64, 128), (64, 64))  # one of them: cached
        assert slide.tile_decodes == 4
        slide.read(2, (0, 0), (10, 10))
        assert slide.level_decodes == (4, 0, 1, 0, 0, 0)
    with open_slide(path, cache_bytes=0) as slide:
        slide.read(0, (0, 0), (10, 10))
        slide.read(0, (0, 0), (10, 10))
        assert slide.tile_decodes == 2


def test_cache_is_bounded(exact_slide):
    path, _ = exact_slide
    tile_bytes = 64 * 64 * 3
    with open_slide(path, cache_bytes=3 * tile_bytes) as slide:
        slide.read(0, (0, 0), (512, 768))
        assert slide.cached_bytes <= 3 * tile_bytes
        assert slide.tile_decodes == 8 * 12


def test_single_level_single_channel_label(tmp_path):
    label = (texture(300, 260, channels=1) > 128).astype(np.uint8) * 2
    path = tmp_path / "label.tif"
    tifffile.imwrite(path, label, tile=(64, 64), compression="zlib")
    with open_slide(path) as slide:
        assert slide.level_shapes == ((300, 260),) and slide.num_channels == 1 and slide.mpp is None
        np.testing.assert_array_equal(slide.read(0, (250, 200), (50, 60)), label[None, 250:300, 200:260])


def test_strip_pages_read_by_strips(tmp_path, monkeypatch):
    image = texture(200, 150)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, image, rowsperstrip=16, photometric="rgb", compression="zlib")
    with open_slide(path) as slide:
        np.testing.assert_array_equal(slide.read(0, (40, 10), (20, 100)), image[40:60, 10:110].transpose(2, 0, 1))
        assert slide.tile_decodes == 2  # rows 40..59 lie in strips 2 and 3
    monkeypatch.setattr(tiff_backend, "MAX_TILE_BYTES", 16 * 150 * 3 - 1)
    with pytest.raises(ValueError, match="strips.tif.*exceeds.*non-tiled"):
        open_slide(path)


def test_resolution_tags_in_inches(tmp_path):
    path = tmp_path / "inch.tif"
    tifffile.imwrite(path, texture(64, 64), tile=(32, 32), resolution=(50800, 25400), resolutionunit="INCH")
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx((1.0, 0.5))  # (y, x): YResolution 25400 px/inch, XResolution 50800


def test_pickle_reopens_by_path(exact_slide):
    path, levels = exact_slide
    with open_slide(path) as slide:
        slide.read(0, (0, 0), (8, 8))
        copy = pickle.loads(pickle.dumps(slide))
    assert copy.tile_decodes == 0  # a fresh object with an empty cache, while the original is closed
    np.testing.assert_array_equal(copy.read(1, (5, 5), (7, 9)), _chw(levels[1])[:, 5:12, 5:14])
    copy.close()


class _Regions(torch.utils.data.Dataset):
    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> np.ndarray:
        slide = self.source if isinstance(self.source, Slide) else open_slide(self.source)
        return slide.read(i % 3, (i, 2 * i), (16, 16))


@pytest.mark.parametrize("by_path", [True, False])
def test_dataloader_workers(exact_slide, by_path):
    path, levels = exact_slide
    with open_slide(path) as slide:
        source = str(path) if by_path else slide
        loader = torch.utils.data.DataLoader(_Regions(source), batch_size=3, num_workers=2)
        batches = torch.cat(list(loader))
    for i in range(6):
        expected = _chw(levels[i % 3])[:, i : i + 16, 2 * i : 2 * i + 16]
        np.testing.assert_array_equal(batches[i].numpy(), expected)


def test_threads_share_a_slide(exact_slide):
    from concurrent.futures import ThreadPoolExecutor

    path, levels = exact_slide
    starts = [(y, x) for y in range(0, 448, 40) for x in range(0, 960, 120)]
    with open_slide(path, cache_bytes=20 * 64 * 64 * 3) as slide, ThreadPoolExecutor(4) as pool:
        regions = list(pool.map(lambda s: slide.read(0, s, (64, 64)), starts))
        assert slide.cached_bytes <= 20 * 64 * 64 * 3
    for (y, x), region in zip(starts, regions):
        np.testing.assert_array_equal(region, _chw(levels[0])[:, y : y + 64, x : x + 64])


def test_openslide_backend_matches_tifffile(exact_slide):
    pytest.importorskip("openslide", reason="OpenSlide (the optional wsi extra) is not installed")
    path, _ = exact_slide
    with open_slide(path, backend="openslide") as other, open_slide(path) as slide:
        assert type(other).__name__ == "WSIReaderSlide"
        assert other.level_shapes == slide.level_shapes and other.mpp == pytest.approx(slide.mpp)
        for level in range(3):
            np.testing.assert_array_equal(other.read(level, (10, 20), (50, 70)), slide.read(level, (10, 20), (50, 70)))
        copy = pickle.loads(pickle.dumps(other))
        np.testing.assert_array_equal(copy.read(1, (3, 4), (5, 6)), slide.read(1, (3, 4), (5, 6)))
        copy.close()


# ------------------------------------------------------------------------------------------ bad input


def test_bad_arguments(exact_slide):
    path, _ = exact_slide
    with open_slide(path) as slide:
        with pytest.raises(ValueError, match="level=6 is out of range for .*exact.tif"):
            slide.read(6, (0, 0), (1, 1))
        with pytest.raises(ValueError, match="exceeds level 1"):
            slide.read(1, (250, 0), (10, 10))
        with pytest.raises(ValueError, match="size\\[0\\] must be >= 1"):
            slide.read(0, (0, 0), (0, 4))
        with pytest.raises(TypeError, match="start must be a \\(row, col\\) pair"):
            slide.read(0, 5, (4, 4))
    with pytest.raises(ValueError, match="is closed"):
        slide.read(0, (0, 0), (4, 4))
    with pytest.raises(ValueError, match="backend must be one of"):
        open_slide(path, backend="pil")
    with pytest.raises(TypeError, match="path must be a slide file path"):
        open_slide(3)


def test_missing_and_non_tiff_files(tmp_path):
    with pytest.raises(ValueError, match="slide file not found: .*nope.svs"):
        open_slide(tmp_path / "nope.svs")
    text = tmp_path / "notes.tif"
    text.write_text("not an image at all\n" * 10)
    with pytest.raises(ValueError, match="notes.tif"):
        open_slide(text, backend="tifffile")
    with pytest.raises(ValueError, match="notes.tif"):
        open_slide(text)  # auto: tifffile, then OpenSlide if installed: both refuse it


def test_truncated_file(tmp_path, exact_slide):
    path, _ = exact_slide
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    with tifffile.TiffFile(path) as tif:  # cut in the middle of level 0's tile data
        page = tif.pages[0]
        middle = (int(page.dataoffsets[0]) + int(page.dataoffsets[-1])) // 2
    cut.write_bytes(data[:middle])
    with pytest.raises(ValueError, match="cut.tif.*(past the end of the file|truncated|not a TIFF)"):
        open_slide(cut)


def test_corrupt_tile(tmp_path, rgb_image):
    path = write_tiff_pyramid(tmp_path / "bad.tif", area_pyramid(rgb_image, 2), tile=64, compression="jpeg")
    with tifffile.TiffFile(path) as tif:
        offset, count = int(tif.pages[0].dataoffsets[5]), int(tif.pages[0].databytecounts[5])
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\x00" * count
    path.write_bytes(bytes(data))
    with open_slide(path) as slide:
        slide.read(0, (0, 0), (64, 64))  # tile 0 is intact
        with pytest.raises(ValueError, match="bad.tif \\(level 0\\): tile 5 .*cannot be decoded"):
            slide.read(0, (0, 5 * 64), (64, 64))


def test_absurd_sizes_are_refused_without_allocating(tmp_path):
    """An ImageWidth tag claiming 2**31 pixels: the tile table does not match, nothing is allocated."""
    path = tmp_path / "forged.tif"
    tifffile.imwrite(path, texture(64, 64), tile=(32, 32), bigtiff=False)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["ImageWidth"]
        value_offset, dtype = tag.valueoffset, tag.dtype
    size = 2 if dtype == 3 else 4
    data[value_offset : value_offset + size] = (2**15 if size == 2 else 2**31 - 1).to_bytes(size, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="forged.tif"):
        open_slide(path)


# ------------------------------------------------------------------------------------------ processes


class _Boxes(torch.utils.data.Dataset):
    """Regions ``(y, x, h, w)`` of level 0 read from one slide object (inherited by forked workers)."""

    def __init__(self, slide, boxes):
        self.slide, self.boxes = slide, boxes

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, i: int) -> np.ndarray:
        y, x, h, w = self.boxes[i]
        return self.slide.read(0, (y, x), (h, w))


def _random_boxes(n: int, shape: tuple[int, int], seed: int = 0) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 80, size=(n, 2))
    return [
        (int(rng.integers(0, shape[0] - h + 1)), int(rng.integers(0, shape[1] - w + 1)), int(h), int(w))
        for h, w in sizes
    ]


def _forked_reads(slide, boxes) -> list[np.ndarray]:
    loader = torch.utils.data.DataLoader(
        _Boxes(slide, boxes), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    return [r.numpy() for r in loader]


@pytest.mark.parametrize("compression", [None, "zlib", "jpeg"])
def test_forked_workers_read_what_the_parent_reads(tmp_path, compression):
    """A slide opened in the parent and used by two forked DataLoader workers: 2000 random regions
    (no cache: every read goes to the file) equal direct reads, for raw, deflate and JPEG tiles."""
    path = write_tiff_pyramid(
        tmp_path / f"fork_{compression}.tif", [texture(256, 384)], tile=32, compression=compression
    )
    boxes = _random_boxes(2000, (256, 384))
    with open_slide(path, cache_bytes=0) as slide:
        regions = _forked_reads(slide, boxes)
    with open_slide(path) as direct:
        for (y, x, h, w), region in zip(boxes, regions):
            np.testing.assert_array_equal(region, direct.read(0, (y, x), (h, w)))


def test_forked_workers_after_the_parent_started_its_decoding_threads(tmp_path):
    path = write_tiff_pyramid(tmp_path / "threads.tif", [texture(256, 384)], tile=32)
    boxes = _random_boxes(100, (256, 384), seed=1)
    with open_slide(path, workers=2) as slide:
        slide.read(0, (0, 0), (100, 100))  # 16 tiles: the parent's decoding pool exists when the workers fork
        regions = _forked_reads(slide, boxes)
        for (y, x, h, w), region in zip(boxes, regions):
            np.testing.assert_array_equal(region, slide.read(0, (y, x), (h, w)))


# ------------------------------------------------------------------------------------------ pyramids


def test_svs_and_ome_levels_out_of_order_are_sorted(tmp_path, rgb_image):
    levels = area_pyramid(rgb_image, 4)
    for layout in ("svs", "ome"):
        path = write_tiff_pyramid(
            tmp_path / f"shuffled.{layout}.tif", [levels[i] for i in (0, 2, 1, 3)], tile=64, layout=layout
        )
        with open_slide(path) as slide:
            assert slide.level_shapes == ((512, 768), (256, 384), (128, 192), (64, 96))
            for k in (1, 2):
                np.testing.assert_array_equal(slide.read(k, (3, 5), (40, 50)), _chw(levels[k])[:, 3:43, 5:55])


@pytest.mark.parametrize("layout", ["svs", "ome"])
def test_pyramid_level_of_another_aspect_ratio_is_refused(tmp_path, rgb_image, layout):
    import cv2 as cv

    levels = area_pyramid(rgb_image, 3)
    odd = [
        levels[0],
        levels[1],
        cv.resize(levels[2], (96, 128), interpolation=cv.INTER_AREA),
    ]  # 128 x 96, not 128 x 192
    path = write_tiff_pyramid(tmp_path / f"odd.{layout}.tif", odd, tile=64, layout=layout)
    with pytest.raises(ValueError, match=r"odd\.\w+\.tif: inconsistent pyramid.*\(128, 96\) is not level 0"):
        open_slide(path)


def test_level_shapes_within_rounding_are_reductions():
    assert tiff_backend._is_reduction((46000, 32914), (11500, 8228))  # Aperio 4x, floor
    assert tiff_backend._is_reduction((301, 203), (76, 51))  # 4x, ceil
    assert tiff_backend._is_reduction((1000, 3), (125, 1))  # a side rounded to one pixel
    assert not tiff_backend._is_reduction((512, 768), (128, 96))
    assert not tiff_backend._is_reduction((512, 768), (130, 192))


# ------------------------------------------------------------------------------------------ resources


def test_declared_slide_size_is_bounded(tmp_path):
    """A 190 KB file declaring 10^6 x 10^6 pixels (every tile the same few bytes) is refused at open."""
    path = write_raw_tiff(tmp_path / "huge.tif", (10**6, 10**6), (8192, 8192), [zlib.compress(bytes(8192 * 8192))], 8)
    assert path.stat().st_size < 250_000
    with pytest.raises(ValueError, match=r"huge.tif: .*1000000 x 1000000.*max_pixels=(\d+)") as error:
        open_slide(path)
    assert f"max_pixels={tiff_backend.MAX_SLIDE_PIXELS} " in str(error.value)
    with open_slide(path, max_pixels=10**12) as slide:  # the limit is the user's to raise
        assert slide.shape == (10**6, 10**6)
        assert slide.read(0, (5000, 5000), (4, 4)).max() == 0
    small = write_raw_tiff(tmp_path / "small.tif", (64, 64), (32, 32), [bytes(32 * 32)])
    with pytest.raises(ValueError, match="small.tif.*max_pixels=4000"):
        tiff_backend.TiffSlide(small, max_pixels=4000)
    with pytest.raises(ValueError, match="small.tif.*max_pixels=4000"):
        open_slide(small, max_pixels=4000)


def test_a_read_holds_at_most_workers_decoded_tiles(tmp_path):
    """16 deflate tiles of 4 MiB (a 70 KB file) side by side, a 16-row read across them: each tile is
    copied into the region and dropped, so the read's peak is a few tiles, not all 16."""
    import tracemalloc

    tile = 2048
    path = write_raw_tiff(
        tmp_path / "bomb.tif", (tile, 16 * tile), (tile, tile), [zlib.compress(bytes(tile * tile))], 8
    )
    assert path.stat().st_size < 100_000
    with open_slide(path, cache_bytes=0, workers=2) as slide:
        slide.read(0, (0, 0), (1, 1))
        tracemalloc.start()
        try:
            region = slide.read(0, (100, 0), (16, 16 * tile))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert region.shape == (1, 16, 16 * tile) and region.max() == 0
    assert peak < 6 * tile * tile, f"peak {peak / 2**20:.1f} MiB for 4 MiB tiles"
    with pytest.raises(
        ValueError, match=r"bomb.tif \(level 0\): a tile of 2048x2048x1 uint8 exceeds .*max_tile_bytes=1000000"
    ):
        open_slide(path, max_tile_bytes=1_000_000)


def _forged_header(data: bytes, codec: str, side: int) -> bytes:
    """``data`` (a JPEG or JPEG 2000 stream) with its header claiming a ``side x side`` image."""
    out = bytearray(data)
    if codec == "jpeg":
        at = out.index(b"\xff\xc0")
        out[at + 5 : at + 9] = struct.pack(">HH", side, side)
    else:
        at = out.index(b"\xff\x51")
        out[at + 6 : at + 14] = struct.pack(">II", side, side)
    return bytes(out)


@pytest.mark.parametrize("codec", ["jpeg", "jpeg2000"])
def test_codec_header_larger_than_the_tile_is_refused_before_decoding(tmp_path, codec):
    """A 64 x 64 tile whose own JPEG / JPEG 2000 header claims 12000 x 12000: refused from the header,
    nothing allocated (the codec would size its output from the header, not from the TIFF tags)."""
    import tracemalloc

    import imagecodecs

    tile = texture(64, 64, channels=1)
    if codec == "jpeg":
        data, compression = imagecodecs.jpeg8_encode(tile, level=90), 7
    else:
        data, compression = imagecodecs.jpeg2k_encode(tile, level=0, codecformat="j2k"), 33003
    good = write_raw_tiff(tmp_path / "good.tif", (64, 128), (64, 64), [data], compression)
    with open_slide(good) as slide:
        assert np.abs(slide.read(0, (0, 64), (64, 64))[0].astype(int) - tile).max() < 16
    path = write_raw_tiff(
        tmp_path / "forged.tif", (64, 128), (64, 64), [data, _forged_header(data, codec, 12000)], compression
    )
    with open_slide(path) as slide:
        slide.read(0, (0, 0), (64, 64))  # tile 0 is intact
        tracemalloc.start()
        try:
            with pytest.raises(
                ValueError, match=r"forged.tif \(level 0\): tile 1 .*header declares a 12000x12000 image"
            ):
                slide.read(0, (0, 64), (64, 64))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 10 << 20
