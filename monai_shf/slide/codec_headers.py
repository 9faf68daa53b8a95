"""The image size an encoded tile's own header declares, read before any codec allocates for it.

Image codecs size their output from the stream's header, not from the TIFF tags: a 4 KB JPEG tile
whose SOF marker claims 30000 x 30000 pixels makes libjpeg allocate 2.6 GB before it finds that the
data are missing. :func:`encoded_shape` parses only the few header bytes (no decoding) so that the
reader can refuse such a tile when the declared image exceeds the tile's shape.

Parsed: JPEG (the SOF marker; TIFF compressions 6, 7, 33007, 34892), JPEG 2000 (the SIZ marker of a
raw codestream or the ``ihdr`` box of a JP2 file; 33003, 33004, 33005, 34712), WebP (the ``VP8 ``,
``VP8L`` or ``VP8X`` chunk; 34927, 50001) and PNG (``IHDR``; 34933). Byte codecs (deflate, LZW,
zstd, LZMA, PackBits...) need no header: tifffile decompresses them into a buffer of the tile's size.
Other image codecs (JPEG XL, JPEG XR) are not parsed.
"""

from __future__ import annotations

import struct

__all__ = ["encoded_shape", "HEADER_COMPRESSIONS"]

_JPEG = frozenset({6, 7, 33007, 34892})
_JPEG2000 = frozenset({33003, 33004, 33005, 34712})
_WEBP = frozenset({34927, 50001})
_PNG = frozenset({34933})
HEADER_COMPRESSIONS = _JPEG | _JPEG2000 | _WEBP | _PNG
"""TIFF compression codes whose tile headers :func:`encoded_shape` reads."""

# start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic)
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def encoded_shape(compression: int, data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` that the header of an encoded tile declares, or None when the
    compression is not one of :data:`HEADER_COMPRESSIONS` or the header cannot be found (the
    decoder then reports the damaged stream itself).

    Args:
        compression: the TIFF ``Compression`` tag value of the page.
        data: the tile's bytes as stored in the file.
    """
    try:
        if compression in _JPEG:
            return _jpeg(data)
        if compression in _JPEG2000:
            return _jpeg2000(data)
        if compression in _WEBP:
            return _webp(data)
        if compression in _PNG:
            return _png(data)
    except (struct.error, IndexError):  # a header cut short: the decoder reports it
        return None
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker in _SOF:
            height, width = struct.unpack_from(">HH", data, i + 5)
            return height, width
        i += 2 + struct.unpack_from(">H", data, i + 2)[0]
    return None


def _j2k_codestream(data: bytes, i: int = 0) -> tuple[int, int] | None:
    if data[i : i + 4] != b"\xff\x4f\xff\x51":  # SOC, then SIZ
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", data, i + 8)
    return max(0, ysiz - yosiz), max(0, xsiz - xosiz)


def _boxes(data: bytes, start: int, end: int):
    i = start
    while i + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, i)
        header = 8
        if length == 1:
            length, header = struct.unpack_from(">Q", data, i + 8)[0], 16
        elif length == 0:
            length = end - i
        if length < header:
            return
        yield kind, i + header, min(i + length, end)
        i += length


def _jpeg2000(data: bytes) -> tuple[int, int] | None:
    if data[:4] == b"\xff\x4f\xff\x51":
        return _j2k_codestream(data)
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind == b"jp2h":
            for sub, s, _ in _boxes(data, start, end):
                if sub == b"ihdr":
                    height, width = struct.unpack_from(">II", data, s)
                    return height, width
        elif kind == b"jp2c":
            return _j2k_codestream(data, start)
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":  # frame tag (3 bytes), start code 9d 01 2a, 14-bit width and height
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        return height & 0x3FFF, width & 0x3FFF
    if chunk == b"VP8L":  # signature 0x2f, then 14 bits width - 1, 14 bits height - 1
        if data[20] != 0x2F:
            return None
        bits = struct.unpack_from("<I", data, 21)[0]
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":  # flags (4 bytes), 24-bit canvas width - 1 and height - 1
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return height, width
    return None


def _png(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return height, width
