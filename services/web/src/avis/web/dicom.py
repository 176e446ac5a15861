"""A DICOM file's technical facts, read from its header by an allow-list: modality, dimensions,
frames, pixel layout, spacing, SOP class and transfer syntax.

Only the tags listed in `TECHNICAL` are decoded; every other element (the patient's name, id,
birth date, the institution, the dates, private tags) is stepped over without being read, so
nothing that identifies the patient can reach a page. Reading stops at the pixel data.
No DICOM library is a dependency of the platform; this reads the two little-endian encodings
(explicit and implicit VR) that carry nearly every file, and only the file meta header of the
others (its transfer syntax is still shown).
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass

Tag = tuple[int, int]

# The facts shown, in order: tag -> (catalogue key, VR when the encoding does not say it).
TECHNICAL: dict[Tag, tuple[str, str]] = {
    (0x0008, 0x0060): ("modality", "CS"),
    (0x0028, 0x0010): ("rows", "US"),
    (0x0028, 0x0011): ("columns", "US"),
    (0x0028, 0x0008): ("frames", "IS"),
    (0x0028, 0x0002): ("samples_per_pixel", "US"),
    (0x0028, 0x0004): ("photometric", "CS"),
    (0x0028, 0x0100): ("bits_allocated", "US"),
    (0x0028, 0x0101): ("bits_stored", "US"),
    (0x0028, 0x0030): ("pixel_spacing", "DS"),
    (0x0018, 0x0050): ("slice_thickness", "DS"),
    (0x0002, 0x0002): ("sop_class", "UI"),
    (0x0002, 0x0010): ("transfer_syntax", "UI"),
}
TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless, first-order prediction",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}
SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image",
    "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image",
    "1.2.840.10008.5.1.4.1.1.128": "PET Image",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
}
# The encodings whose data set this reader walks (the others: the file meta header only).
IMPLICIT = "1.2.840.10008.1.2"
WALKED = {IMPLICIT, "1.2.840.10008.1.2.1"} | {
    uid for uid in TRANSFER_SYNTAXES if uid.startswith("1.2.840.10008.1.2.4") or uid.endswith(".5")
}
# VRs whose explicit length takes four bytes (after two reserved ones).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"} | {b"UR", b"UT", b"UV"}
)
PIXEL_DATA: Tag = (0x7FE0, 0x0010)
ITEM: Tag = (0xFFFE, 0xE000)
ITEM_END: Tag = (0xFFFE, 0xE00D)
SEQUENCE_END: Tag = (0xFFFE, 0xE0DD)
UNDEFINED = 0xFFFFFFFF
MAX_DEPTH = 8
MAX_VALUE = 128  # a technical value is short; a longer one is not shown


class Unreadable(Exception):
    """Not a DICOM file, or one cut off or malformed where this reader looks."""


@dataclass(frozen=True)
class Element:
    """Where one element's value lies."""

    tag: Tag
    vr: bytes
    start: int
    length: int


class _Reader:
    def __init__(self, data: bytes, explicit: bool) -> None:
        self.data = data
        self.explicit = explicit

    def element(self, pos: int) -> Element:
        if pos + 8 > len(self.data):
            raise Unreadable("cut off")
        group, number = struct.unpack_from("<HH", self.data, pos)
        tag = (group, number)
        if tag in (ITEM, ITEM_END, SEQUENCE_END) or not self.explicit:
            vr = TECHNICAL.get(tag, ("", "UN"))[1].encode() if not self.explicit else b""
            (length,) = struct.unpack_from("<I", self.data, pos + 4)
            return Element(tag, vr, pos + 8, length)
        vr = self.data[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            if pos + 12 > len(self.data):
                raise Unreadable("cut off")
            (length,) = struct.unpack_from("<I", self.data, pos + 8)
            return Element(tag, vr, pos + 12, length)
        (length,) = struct.unpack_from("<H", self.data, pos + 6)
        return Element(tag, vr, pos + 8, length)

    def skip_undefined(self, pos: int, depth: int) -> int:
        """The position after a sequence (or encapsulated pixel data) of undefined length."""
        if depth > MAX_DEPTH:
            raise Unreadable("nested too deep")
        while True:
            item = self.element(pos)
            if item.tag == SEQUENCE_END:
                return item.start
            if item.tag != ITEM:
                raise Unreadable("not an item")
            if item.length != UNDEFINED:
                pos = item.start + item.length
                continue
            pos = item.start
            while True:
                inner = self.element(pos)
                if inner.tag == ITEM_END:
                    pos = inner.start
                    break
                pos = self.after(inner, depth + 1)

    def after(self, element: Element, depth: int) -> int:
        if element.length == UNDEFINED:
            return self.skip_undefined(element.start, depth)
        return element.start + element.length


def _value(data: bytes, element: Element, vr: bytes) -> str | None:
    if element.length > MAX_VALUE or element.start + element.length > len(data):
        return None
    raw = data[element.start : element.start + element.length]
    if vr == b"US":
        values = struct.unpack_from(f"<{len(raw) // 2}H", raw)
        return "\\".join(str(v) for v in values) or None
    text = raw.decode("ascii", errors="replace").strip("\x00 ")
    return text.replace("\\", " \u00d7 ") if vr == b"DS" else text or None


def technical_facts(data: bytes) -> list[tuple[str, str]]:
    """The file's technical facts as (catalogue key, value), in `TECHNICAL`'s order."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise Unreadable("no DICM preamble")
    found: dict[str, str] = {}
    meta = _Reader(data, explicit=True)
    pos = 132
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        element = meta.element(pos)
        _keep(found, data, element, element.vr)
        pos = meta.after(element, 0)
    syntax = found.get("transfer_syntax", "")
    if syntax in WALKED:
        # What was found before any damage is still true.
        with contextlib.suppress(Unreadable):
            _walk(_Reader(data, explicit=syntax != IMPLICIT), pos, found)
    for key, names in (("transfer_syntax", TRANSFER_SYNTAXES), ("sop_class", SOP_CLASSES)):
        if key in found and found[key] in names:
            found[key] = f"{names[found[key]]} ({found[key]})"
    order = [key for key, _ in TECHNICAL.values()]
    return sorted(found.items(), key=lambda item: order.index(item[0]))


def _walk(reader: _Reader, pos: int, found: dict[str, str]) -> None:
    while pos + 8 <= len(reader.data):
        element = reader.element(pos)
        if element.tag >= PIXEL_DATA:
            return
        _keep(found, reader.data, element, element.vr)
        pos = reader.after(element, 0)


def _keep(found: dict[str, str], data: bytes, element: Element, vr: bytes) -> None:
    wanted = TECHNICAL.get(element.tag)
    if wanted is None:
        return  # not on the allow-list: never decoded
    value = _value(data, element, vr or wanted[1].encode())
    if value:
        found[wanted[0]] = value
