"""encoded_shape: the image size in the header of JPEG, JPEG 2000, WebP and PNG tiles."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest

from monai_shf.slide.codec_headers import HEADER_COMPRESSIONS, encoded_shape


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)


def test_headers_of_every_parsed_codec(image):
    gray = np.ascontiguousarray(image[..., 0])
    streams = {
        7: [imagecodecs.jpeg8_encode(image, level=80), imagecodecs.jpeg8_encode(gray, level=80)],
        33003: [
            imagecodecs.jpeg2k_encode(image, codecformat="j2k"),
            imagecodecs.jpeg2k_encode(image, codecformat="jp2"),
        ],
        50001: [
            imagecodecs.webp_encode(image, level=50),
            imagecodecs.webp_encode(image, lossless=True),
            imagecodecs.webp_encode(np.dstack([image, gray]), level=50),
        ],
        34933: [imagecodecs.png_encode(image)],
    }
    for compression, datas in streams.items():
        assert compression in HEADER_COMPRESSIONS
        for data in datas:
            assert encoded_shape(compression, data) == (37, 53), compression


def test_unknown_codecs_and_damaged_headers_give_none(image):
    data = imagecodecs.jpeg8_encode(image)
    assert encoded_shape(8, imagecodecs.zlib_encode(image.tobytes())) is None  # deflate: bounded by tifffile
    assert encoded_shape(7, data[:3]) is None
    assert encoded_shape(7, b"\x00" * 64) is None
    assert encoded_shape(33003, b"\xff\x4f\xff\x51\x00") is None
    assert encoded_shape(50001, b"RIFF\x00\x00\x00\x00WEBPVP8 ") is None
