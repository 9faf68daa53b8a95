"""monai_shf.data.readers: TiffReader, a PILReader that reads TIFF with tifffile."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from monai.transforms import LoadImaged
from PIL import Image

from monai_shf.data import TiffReader


def _load(path, **kwargs):
    loader = LoadImaged(
        "image", reader="monai_shf.data.TiffReader", image_only=True, ensure_channel_first=True, **kwargs
    )
    return loader({"image": str(path)})["image"]


@pytest.fixture()
def rgb(rng):
    return rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)


def test_tiff_loads_exactly_like_the_png_of_the_same_image(rgb, tmp_path):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    tifffile.imwrite(tmp_path / "a.tif", rgb)
    tifffile.imwrite(tmp_path / "p.tiff", np.moveaxis(rgb, -1, 0), planarconfig="separate", photometric="rgb")
    tifffile.imwrite(tmp_path / "g.tif", rgb[..., 0])
    png = LoadImaged("image", image_only=True, ensure_channel_first=True, dtype=None)(
        {"image": str(tmp_path / "a.png")}
    )
    for name in ("a.tif", "p.tiff", "a.png"):
        img = _load(tmp_path / name, dtype=None)
        assert img.dtype == png["image"].dtype and np.array_equal(img.numpy(), png["image"].numpy()), name
        assert tuple(img.meta["spatial_shape"]) == (60, 40)  # PIL's (W, H) axis order
    grey = _load(tmp_path / "g.tif", dtype=None)
    assert grey.shape == (1, 60, 40) and np.array_equal(grey.numpy(), _load(tmp_path / "g.png", dtype=None).numpy())
    assert _load(tmp_path / "a.tif").dtype.is_floating_point  # LoadImaged's own dtype argument still applies
    raw = TiffReader(reverse_indexing=False).get_data(TiffReader().read(tmp_path / "a.tif"))[0]
    assert np.array_equal(raw, rgb)


def test_tiff_has_no_pil_pixel_limit(rgb, tmp_path, monkeypatch):
    """Pillow refuses images above 2 * MAX_IMAGE_PIXELS (~179 Mpx by default); tifffile has no limit."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # this 2400-pixel image is now "too large" for PIL
    Image.fromarray(rgb).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", rgb, tile=(16, 16), compression="zlib")
    with pytest.raises(Exception, match="exceeds limit|decompression bomb"):
        TiffReader().get_data(TiffReader().read(tmp_path / "a.png"))
    assert _load(tmp_path / "a.tif", dtype=None).shape == (3, 60, 40)


def test_not_a_2d_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 8, 9), np.uint8))
    with pytest.raises(ValueError, match="stack.tif.*2D TIFF"):
        TiffReader().read(tmp_path / "stack.tif")
    assert TiffReader().verify_suffix("x.TIFF") and TiffReader().verify_suffix("x.png")
    assert not TiffReader().verify_suffix("x.nii.gz")
