"""Whether a JPEG file's bytes are complete: libjpeg decodes a truncated file without an error.

A JPEG cut short (an interrupted copy or download) still decodes with OpenCV: libjpeg prints
"Premature end of JPEG file" on stderr and fills the missing rows with grey, and `cv2.imread`
returns the image as if nothing were wrong. `jpeg_is_complete` walks the file's marker segments
(ITU-T T.81, annex B) up to its end-of-image marker instead:

- each marker is 0xFF (any number of fill bytes 0xFF) then a code; SOI, EOI, RST0-7 and TEM
  stand alone, every other marker carries a 2-byte big-endian length that counts itself;
- after a start-of-scan header comes entropy-coded data, in which 0xFF is always followed by a
  stuffed 0x00 or a restart marker RST0-7, so the next other marker ends the scan (progressive
  files have several scans with tables between them).

The file is complete when EOI is reached; bytes after it (camera trailers) are ignored. A thumbnail
inside an APP1 (Exif) segment is skipped with its segment, so its own EOI does not count.
"""

from __future__ import annotations

_MARKER = 0xFF
_SOI, _EOI, _SOS, _TEM = 0xD8, 0xD9, 0xDA, 0x01
_RST = range(0xD0, 0xD8)
_STUFFED = 0x00
_LENGTH_BYTES = 2


def is_jpeg(data: bytes) -> bool:
    """True when `data` starts with the JPEG start-of-image marker (FF D8)."""
    return data[:2] == bytes((_MARKER, _SOI))


def jpeg_is_complete(data: bytes) -> bool:
    """True when the JPEG in `data` reaches its end-of-image marker; False when it is cut short.

    `data` must start with SOI (`is_jpeg`). Bytes that are not a marker where one is expected
    are skipped up to the next 0xFF, as libjpeg does ("extraneous bytes before marker").
    """
    position, end = 2, len(data)
    while True:
        position = data.find(bytes((_MARKER,)), position)
        if position < 0:
            return False
        while position < end and data[position] == _MARKER:  # fill bytes
            position += 1
        if position >= end:
            return False
        code = data[position]
        position += 1
        if code == _EOI:
            return True
        if code == _STUFFED or code in _RST or code in (_SOI, _TEM):
            continue  # stand-alone (or a stuffed byte met while resynchronising)
        if position + _LENGTH_BYTES > end:
            return False
        length = int.from_bytes(data[position:position + _LENGTH_BYTES], "big")
        if length < _LENGTH_BYTES:
            return False
        position += length
        if position > end:
            return False
        if code == _SOS:
            position = _end_of_scan(data, position)
            if position < 0:
                return False


def _end_of_scan(data: bytes, position: int) -> int:
    """Offset of the marker that ends the entropy-coded data starting at `position`; -1 if none."""
    end = len(data)
    while True:
        position = data.find(bytes((_MARKER,)), position)
        if position < 0 or position + 1 >= end:
            return -1
        following = data[position + 1]
        if following == _STUFFED or following in _RST or following == _MARKER:
            # A stuffed 0xFF, a restart marker, or a fill byte before a marker: skip past the FF.
            position += 1 if following == _MARKER else 2
            continue
        return position
