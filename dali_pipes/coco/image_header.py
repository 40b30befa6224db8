"""Image size from the first bytes of a JPEG or PNG file, without decoding anything.

Used to enforce the reader's pixel limit (``CocoDataset(max_image_pixels=...)``) before any
decoder (Pillow, nvJPEG) sees the file: a header that claims 20000 x 10000 pixels is refused
from its header alone, whatever the decoder's own limits are.

Formats (the two the reader accepts):

* PNG: the 8-byte signature, then the ``IHDR`` chunk whose first 8 data bytes are width and
  height, big-endian uint32 (PNG specification, section 11.2.2).
* JPEG: ``FF D8``, then marker segments; the first start-of-frame marker (``SOF0``-``SOF15``
  except ``DHT`` ``C4``, ``JPG`` ``C8`` and ``DAC`` ``CC``) carries precision (1 byte), height
  and width (big-endian uint16) (ITU-T T.81, B.2.2). Fill bytes ``FF`` and the parameterless
  markers ``RSTn``/``TEM`` are stepped over.
"""

from __future__ import annotations

import struct

__all__ = ["ImageHeader", "read_image_header"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


class ImageHeader(tuple):
    """``(format, width, height)``: ``"JPEG"`` or ``"PNG"``, sizes in pixels (ints)."""

    __slots__ = ()

    def __new__(cls, fmt: str, width: int, height: int) -> "ImageHeader":
        return super().__new__(cls, (fmt, width, height))

    @property
    def format(self) -> str:
        return self[0]

    @property
    def width(self) -> int:
        return self[1]

    @property
    def height(self) -> int:
        return self[2]

    @property
    def pixels(self) -> int:
        return self[1] * self[2]


def read_image_header(data: bytes | memoryview) -> ImageHeader | None:
    """The format and size a JPEG or PNG file declares, or ``None`` when ``data`` is neither
    (or its header is cut short). Reads at most the bytes up to the first frame header."""
    view = memoryview(data)
    if len(view) >= 24 and bytes(view[:8]) == _PNG_SIGNATURE and bytes(view[12:16]) == b"IHDR":
        width, height = struct.unpack(">II", view[16:24])
        return ImageHeader("PNG", int(width), int(height))
    if len(view) >= 4 and view[0] == 0xFF and view[1] == 0xD8:
        return _jpeg_size(view)
    return None


def _jpeg_size(view: memoryview) -> ImageHeader | None:
    pos, end = 2, len(view)
    while pos + 1 < end:
        if view[pos] != 0xFF:
            return None  # not at a marker: a corrupt stream
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        pos += 2
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if pos + 2 > end:
            return None
        (length,) = struct.unpack(">H", view[pos : pos + 2])
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            if pos + 7 > end:
                return None
            height, width = struct.unpack(">HH", view[pos + 3 : pos + 7])
            return ImageHeader("JPEG", int(width), int(height))
        pos += length
    return None
