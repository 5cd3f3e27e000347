"""A small Gatan DigitalMicrograph (.dm3 / .dm4) writer for tests.

RosettaSciIO reads DM files but cannot write them. This writes the minimal files Digital
Micrograph itself produces for one image, following the public description of the format
(EMAN / Greg Jefferis' DM3 notes, Chris Boothroyd's DM3/DM4 notes):

* header, big-endian: version (4 bytes), length of the root tag group (4 bytes in DM3, 8 in
  DM4; the file length minus header and trailer), byte order of the tag data (4 bytes, 1 =
  little-endian);
* the root TagGroup: ``sorted`` (1 byte), ``open`` (1 byte), number of tags (4 / 8 bytes), then
  each tag: kind (1 byte: 20 group, 21 data), name length (2 bytes, big-endian), the name; in DM4
  the tag's remaining length (8 bytes); then a TagGroup, or ``%%%%``, the number of words of the
  type definition and those words (4 / 8 bytes each, big-endian), then the value in the byte
  order of the header (little-endian here);
* a trailer of zero bytes.

The root holds ``ImageList`` with a thumbnail (``[0]``, RGBA) and the image (``[1]``);
``Thumbnails`` names entry 0 as the thumbnail, as in files Digital Micrograph writes. The image
has ``ImageData`` with ``Calibrations`` (``Brightness`` and one ``Dimension`` group per axis,
x first, each with ``Origin``, ``Scale``, ``Units``), ``Data``, ``DataType``, ``Dimensions``
(x first) and ``PixelDepth``; ``ImageTags`` and ``Name``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# encoded types of tag data
SHORT, LONG, USHORT, ULONG, FLOAT, DOUBLE, BOOL, CHAR, OCTET, LONGLONG, ULONGLONG = 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
STRUCT, STRING, ARRAY = 15, 18, 20
_FORMAT = {SHORT: "h", LONG: "i", USHORT: "H", ULONG: "I", FLOAT: "f", DOUBLE: "d", BOOL: "B", CHAR: "b",
           OCTET: "b", LONGLONG: "q", ULONGLONG: "Q"}
# numpy dtype -> (DM image DataType, encoded type of the Data array elements)
IMAGE_TYPES = {np.dtype("int16"): (1, SHORT), np.dtype("float32"): (2, FLOAT), np.dtype("uint8"): (6, OCTET),
               np.dtype("int32"): (7, LONG), np.dtype("int8"): (9, CHAR), np.dtype("uint16"): (10, USHORT),
               np.dtype("uint32"): (11, ULONG), np.dtype("float64"): (12, DOUBLE)}
RGBA = 23  # DataType of the thumbnail (4 bytes per pixel)


class Simple:
    """A single number of one encoded type."""

    def __init__(self, code: int, value):
        self.code, self.value = code, value


class Array:
    """An array of one simple encoded type: a numpy array (written as is) or a sequence."""

    def __init__(self, code: int, values):
        self.code, self.values = code, values


class Struct:
    """A struct of simple fields: [(code, value), ...]."""

    def __init__(self, fields):
        self.fields = list(fields)


def text(s: str) -> Array:
    """A string as Digital Micrograph stores it in tags: an array of UTF-16 code units."""
    return Array(USHORT, [ord(c) for c in s])


class _Encoder:
    def __init__(self, version: int):
        if version not in (3, 4):
            raise ValueError(f"DM version {version}: only 3 and 4")
        self.version = version
        self.word = ">q" if version == 4 else ">i"      # lengths, counts and type words
        self.endian = "<"                                  # tag data

    def words(self, *values) -> bytes:
        return b"".join(struct.pack(self.word, v) for v in values)

    def data(self, value) -> bytes:
        """The type definition words and the bytes of one data tag's value."""
        if isinstance(value, Simple):
            return self.words(1, value.code) + struct.pack(self.endian + _FORMAT[value.code], value.value)
        if isinstance(value, Array):
            if isinstance(value.values, np.ndarray):
                arr = value.values
                want = np.dtype(self.endian + _FORMAT[value.code])
                if arr.dtype.itemsize != want.itemsize:
                    raise ValueError(f"{arr.dtype} data stored as encoded type {value.code}")
                raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder(self.endian), copy=False).tobytes()
                n = arr.size
            else:
                raw = b"".join(struct.pack(self.endian + _FORMAT[value.code], v) for v in value.values)
                n = len(value.values)
            return self.words(3, ARRAY, value.code, n) + raw
        if isinstance(value, Struct):
            definition = [0, len(value.fields)] + [w for code, _ in value.fields for w in (0, code)]
            raw = b"".join(struct.pack(self.endian + _FORMAT[code], v) for code, v in value.fields)
            return self.words(1 + len(definition), STRUCT, *definition) + raw
        raise TypeError(f"cannot store {type(value).__name__} in a DM tag")

    def group(self, entries) -> bytes:
        """A TagGroup: a dict (named tags) or a list (unnamed tags, as in ImageList)."""
        items = entries.items() if isinstance(entries, dict) else (("", e) for e in entries)
        body = []
        for name, value in items:
            label = name.encode("latin-1")
            if isinstance(value, (dict, list)):
                kind, content = 20, self.group(value)
            else:
                kind, content = 21, b"%%%%" + self.data(value)
            head = struct.pack(">bH", kind, len(label)) + label
            if self.version == 4:
                head += struct.pack(">q", len(content))   # bytes of the tag after this field
            body.append(head + content)
        n = len(body)
        return struct.pack(">BB", 1, 0) + self.words(n) + b"".join(body)


def _calibration(origin: float, scale: float, units: str) -> dict:
    return {"Origin": Simple(FLOAT, origin), "Scale": Simple(FLOAT, scale), "Units": text(units)}


def _image_entry(data: np.ndarray, datatype: int, element: int, dims: list, name: str) -> dict:
    """One ImageList entry; ``dims`` are (scale, units) per axis, x first."""
    shape_x_first = data.shape[::-1]
    return {
        "ImageData": {
            "Calibrations": {
                "Brightness": _calibration(0.0, 1.0, "Counts"),
                "Dimension": [_calibration(0.0, s, u) for s, u in dims],
                "DisplayCalibratedUnits": Simple(BOOL, 1),
            },
            "Data": Array(element, data.reshape(-1)),
            "DataType": Simple(LONG, datatype),
            "Dimensions": [Simple(ULONG, n) for n in shape_x_first],
            "PixelDepth": Simple(LONG, data.dtype.itemsize),
        },
        "ImageTags": {},
        "Name": text(name),
        "UniqueID": Struct([(ULONG, 1), (ULONG, 2), (ULONG, 3), (ULONG, 4)]),
    }


def write_dm(path, data, scale, units: str, version: int = 3, name: str = "image",
             frame_scale: float = 1.0, frame_units: str = "") -> Path:
    """Write `data` (rows, cols) or (frames, rows, cols) as a DM3 (`version` 3) or DM4 (4) file.

    The image axes get `scale` (one number, or (y, x)) in `units` per pixel; the frame axis of a
    stack gets `frame_scale` in `frame_units`. The file holds a thumbnail before the image, as
    real files do.
    """
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise ValueError(f"data of shape {data.shape}: expected (rows, cols) or (frames, rows, cols)")
    if data.dtype not in IMAGE_TYPES:
        raise ValueError(f"{data.dtype} data: expected one of {', '.join(map(str, IMAGE_TYPES))}")
    datatype, element = IMAGE_TYPES[data.dtype]
    scale_y, scale_x = (scale, scale) if np.isscalar(scale) else scale
    dims = [(scale_x, units), (scale_y, units)] + ([(frame_scale, frame_units)] if data.ndim == 3 else [])
    thumb = np.full((8, 8), 0xFF808080, dtype=np.uint32)         # grey, opaque RGBA
    root = {
        "ApplicationBounds": Struct([(LONG, 0), (LONG, 0), (LONG, 600), (LONG, 800)]),
        "ImageList": [
            _image_entry(thumb, RGBA, ULONG, [(1.0, ""), (1.0, "")], "thumbnail"),
            _image_entry(data, datatype, element, dims, name),
        ],
        "InImageMode": Simple(BOOL, 1),
        "Thumbnails": [{"ImageIndex": Simple(LONG, 0),
                        "SourceSize_Pixels": Struct([(LONG, thumb.shape[1]), (LONG, thumb.shape[0])])}],
    }
    enc = _Encoder(version)
    tags = enc.group(root)
    trailer = bytes(8 if version == 3 else 16)
    header = struct.pack(">i", version) + struct.pack(enc.word, len(tags) + len(trailer)) + struct.pack(">i", 1)
    path = Path(path)
    path.write_bytes(header + tags + trailer)
    return path
