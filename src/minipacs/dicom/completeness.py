"""Is a received instance whole? A strict walk of its element lengths, pixels untouched.

pydicom reads a value that is cut short without complaint (`fp.read(length)` returns what
is there) and never reads past the header at ingest (`stop_before_pixels`), so an
instance cut inside its Pixel Data parses fine and would be acknowledged. This module
walks every element header of the file meta and the data set (PS3.5 §7: explicit and
implicit VR, little and big endian, defined and undefined lengths, sequences and items
with their delimiters, encapsulated Pixel Data fragments up to the sequence delimiter,
PS3.5 §A.4) and checks that each declared length fits in the bytes received. Values are
skipped, not read: on a file that is a seek, in memory an index update. A deflated data
set (PS3.5 §A.5) is inflated as a stream to its end, and the inflated bytes walked.

`check_complete` raises `IncompleteInstance` (the bytes cannot be read back whole: cut
short, broken, or not encoded as the file meta's TransferSyntaxUID says) or
`InvalidAttribute` (well formed, but an image without its Pixel Data, which is what a cut
exactly at the Pixel Data element leaves).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.datadict import dictionary_description, dictionary_VR
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from minipacs.dicom.byte_sources import (
    FileReader,
    InflatingReader,
    MemoryReader,
    Reader,
    StreamReader,
)
from minipacs.errors import IncompleteInstance, InvalidAttribute, InvalidInstance

PREAMBLE_LEN = 128
UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
PIXEL_DATA_PROVIDER_URL = 0x00287FE0
ROWS = 0x00280010
SOP_CLASS_UID = 0x00080016
TRANSFER_SYNTAX_UID = 0x00020010
FILE_META_GROUP_LENGTH = 0x00020000
MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
_PIXEL_TAGS = frozenset({PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA})

# The two-letter VRs of PS3.5 §6.2 (pydicom's list; its "US or SS" forms are not VRs).
_VALID_VRS = frozenset(v.value.encode("ascii") for v in VR if len(v.value) == 2)
_LONG_VRS = frozenset(v.value.encode("ascii") for v in EXPLICIT_VR_LENGTH_32)
_IMPLICIT_LE = UID("1.2.840.10008.1.2")
_EXPLICIT_LE = UID("1.2.840.10008.1.2.1")
_EXPLICIT_BE = UID("1.2.840.10008.1.2.2")


def tag_name(tag: int) -> str:
    """'Pixel Data (7FE0,0010)'; private and unknown tags by number only."""
    where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    try:
        return f"{dictionary_description(tag)} {where}"
    except KeyError:
        return f"{'private element' if (tag >> 16) % 2 else 'element'} {where}"


_SQ_BY_TAG: dict[int, bool] = {}


def _is_sequence_in_dictionary(tag: int) -> bool:
    known = _SQ_BY_TAG.get(tag)
    if known is None:
        try:
            known = dictionary_VR(tag) == "SQ"
        except KeyError:
            known = False
        _SQ_BY_TAG[tag] = known
    return known


@dataclass
class _Found:
    """What the walk saw at the top level of the data set."""

    sop_class_uid: str = ""
    pixel_data: bool = False
    rows: bool = False
    pixel_data_provider_url: bool = False


class _Walk:
    """One pass over a data set encoded one way (VR explicit or not, byte order)."""

    def __init__(self, reader: Reader, *, implicit: bool, little: bool,
                 encapsulated: bool | None, where: str) -> None:
        self.reader = reader
        self.implicit = implicit
        self.little = little
        self.encapsulated = encapsulated  # None: unknown transfer syntax, not checked
        self.where = where  # "byte" (of the file) or "inflated byte" (of the data set)
        self.strict_order = False
        self.found = _Found()
        self._tag = struct.Struct("<HH" if little else ">HH")
        self._u16 = struct.Struct("<H" if little else ">H")
        self._u32 = struct.Struct("<I" if little else ">I")

    def _at(self, pos: int) -> str:
        return f"{self.where} {pos}"

    # ---------------------------------------------------------------- elements
    def dataset(self, end: int | None, *, in_item: bool, implicit: bool,
                top: bool = False) -> None:  # noqa: C901 - one loop over element headers
        """Walk elements until `end` (a defined length), an Item Delimitation Item
        (`in_item` of undefined length) or the end of the bytes (the top level)."""
        r = self.reader
        previous = -1
        while end is None or r.pos < end:
            start = r.pos
            head = r.read(8)
            if len(head) < 8:
                if not head and end is None and not in_item:
                    return
                if not head and in_item:
                    raise IncompleteInstance(
                        f"data set ends inside an item of undefined length: its Item "
                        f"Delimitation Item (FFFE,E00D) is missing (at {self._at(start)})")
                raise IncompleteInstance(
                    f"data set ends inside an element header: {len(head)} of 8 bytes at "
                    f"{self._at(start)}")
            group, element = self._tag.unpack_from(head)
            tag = group << 16 | element
            # PS3.5 §7.1: tags increase and occur once. A repeat is never a data set (it
            # is what a run of zeros reads as); order is only demanded when guessing
            # another encoding, since some senders write elements out of order.
            if tag == previous or (self.strict_order and tag < previous):
                raise IncompleteInstance(
                    f"{tag_name(tag)} at {self._at(start)} follows {tag_name(previous)}: "
                    "elements repeated or out of order, not a data set (PS3.5 §7.1)")
            previous = tag
            if tag == ITEM_DELIMITER:
                if in_item and end is None:
                    return
                raise IncompleteInstance(
                    f"unexpected Item Delimitation Item (FFFE,E00D) at {self._at(start)}, "
                    "outside any item of undefined length")
            if group == 0xFFFE:
                raise IncompleteInstance(
                    f"unexpected {tag_name(tag)} at {self._at(start)} where a data element "
                    "should start")
            vr: bytes | None
            if implicit:
                vr = None
                length = self._u32.unpack_from(head, 4)[0]
            else:
                vr = head[4:6]
                if vr not in _VALID_VRS:
                    raise IncompleteInstance(
                        f"{tag_name(tag)} at {self._at(start)} has no valid VR (bytes "
                        f"{vr!r}): the data set is not explicit VR as the transfer syntax "
                        "says")
                if vr in _LONG_VRS:
                    extra = r.read(4)
                    if len(extra) < 4:
                        raise IncompleteInstance(
                            f"data set ends inside the header of {tag_name(tag)} at "
                            f"{self._at(start)}")
                    length = self._u32.unpack_from(extra)[0]
                else:
                    length = self._u16.unpack_from(head, 6)[0]
            if end is not None and r.pos > end:
                raise IncompleteInstance(
                    f"the header of {tag_name(tag)} at {self._at(start)} runs past the end "
                    "of its item")
            if top:
                self._note(tag, length, start)
            if length == UNDEFINED:
                self._undefined_length(tag, vr, implicit, start)
            else:
                self._defined_length(tag, vr, implicit, length, start, end)

    def _note(self, tag: int, length: int, start: int) -> None:
        found = self.found
        if tag in _PIXEL_TAGS:
            found.pixel_data = True
            if tag == PIXEL_DATA and self.encapsulated is not None and length != 0:
                if self.encapsulated and length != UNDEFINED:
                    raise IncompleteInstance(
                        f"Pixel Data (7FE0,0010) at {self._at(start)} is native (length "
                        f"{length}) but the transfer syntax is an encapsulated one")
                if not self.encapsulated and length == UNDEFINED:
                    raise IncompleteInstance(
                        f"Pixel Data (7FE0,0010) at {self._at(start)} is encapsulated but "
                        "the transfer syntax is a native one")
        elif tag == ROWS:
            found.rows = True
        elif tag == PIXEL_DATA_PROVIDER_URL:
            found.pixel_data_provider_url = True

    def _defined_length(self, tag: int, vr: bytes | None, implicit: bool, length: int,
                        start: int, end: int | None) -> None:
        r = self.reader
        left_in_container = None if end is None else end - r.pos
        if left_in_container is not None and length > left_in_container:
            raise IncompleteInstance(
                f"{tag_name(tag)} declares {length} bytes, only {left_in_container} left in "
                f"its item (element at {self._at(start)})")
        sequence = vr == b"SQ" if vr is not None else _is_sequence_in_dictionary(tag)
        if sequence:
            self.items(r.pos + length, tag, start, implicit=implicit)
            return
        if tag == SOP_CLASS_UID and length <= 64 and not self.found.sop_class_uid:
            value = r.read(length)
            self.found.sop_class_uid = value.rstrip(b"\0 ").decode("ascii", "replace")
            received = len(value)
        else:
            received = r.skip(length)
        if received < length:
            raise IncompleteInstance(
                f"{tag_name(tag)} declares {length} bytes, {received} received "
                f"(element at {self._at(start)})")

    def _undefined_length(self, tag: int, vr: bytes | None, implicit: bool,
                          start: int) -> None:
        if tag == PIXEL_DATA and vr in (None, b"OB", b"OW"):
            self.fragments(start)
        elif vr in (None, b"SQ"):
            self.items(None, tag, start, implicit=implicit)
        elif vr == b"UN":
            # PS3.5 §6.2.2: UN of undefined length holds a sequence in implicit VR LE.
            if not self.little:
                raise IncompleteInstance(
                    f"{tag_name(tag)} at {self._at(start)}: UN of undefined length in a big "
                    "endian data set cannot be read")
            self.items(None, tag, start, implicit=True)
        else:
            raise IncompleteInstance(
                f"{tag_name(tag)} at {self._at(start)} has undefined length, which VR "
                f"{vr.decode('ascii', 'replace')} does not allow (PS3.5 §7.1.2)")

    # ---------------------------------------------------------------- items
    def items(self, end: int | None, tag: int, start: int, *, implicit: bool) -> None:
        """The items of a sequence up to `end` or its Sequence Delimitation Item."""
        r = self.reader
        while end is None or r.pos < end:
            at = r.pos
            head = r.read(8)
            if len(head) < 8:
                raise IncompleteInstance(
                    f"data set ends inside {tag_name(tag)} (sequence at {self._at(start)}): "
                    + ("its Sequence Delimitation Item (FFFE,E0DD) is missing" if end is None
                       else f"it declares {end - start} bytes more than were received"))
            group, element = self._tag.unpack_from(head)
            item_tag = group << 16 | element
            length = self._u32.unpack_from(head, 4)[0]
            if item_tag == SEQUENCE_DELIMITER and end is None:
                return
            if item_tag != ITEM:
                raise IncompleteInstance(
                    f"{tag_name(tag)} (sequence at {self._at(start)}) holds "
                    f"{tag_name(item_tag)} at {self._at(at)} where an Item (FFFE,E000) "
                    "should be")
            if length == UNDEFINED:
                self.dataset(None, in_item=True, implicit=implicit)
                continue
            if end is not None and length > end - r.pos:
                raise IncompleteInstance(
                    f"an item of {tag_name(tag)} declares {length} bytes, only "
                    f"{end - r.pos} left in the sequence (item at {self._at(at)})")
            self.dataset(r.pos + length, in_item=True, implicit=implicit)

    def fragments(self, start: int) -> None:
        """Encapsulated Pixel Data (PS3.5 §A.4): items of defined length, then the
        Sequence Delimitation Item. Fragment bytes are skipped, never decoded."""
        r = self.reader
        index = 0
        while True:
            at = r.pos
            head = r.read(8)
            if len(head) < 8:
                raise IncompleteInstance(
                    f"Pixel Data (7FE0,0010) ends after {index} fragments: its Sequence "
                    f"Delimitation Item (FFFE,E0DD) is missing (at {self._at(at)})")
            group, element = self._tag.unpack_from(head)
            item_tag = group << 16 | element
            length = self._u32.unpack_from(head, 4)[0]
            if item_tag == SEQUENCE_DELIMITER:
                return
            if item_tag != ITEM or length == UNDEFINED:
                raise IncompleteInstance(
                    f"Pixel Data (7FE0,0010) holds {tag_name(item_tag)} of length "
                    f"{length:#x} at {self._at(at)} where a fragment item should be")
            received = r.skip(length)
            if received < length:
                kind = "basic offset table" if index == 0 else f"fragment {index}"
                raise IncompleteInstance(
                    f"Pixel Data (7FE0,0010) {kind} declares {length} bytes, {received} "
                    f"received (item at {self._at(at)})")
            index += 1


# -------------------------------------------------------------------- file meta
@dataclass(frozen=True)
class _Meta:
    transfer_syntax_uid: str
    sop_class_uid: str  # MediaStorageSOPClassUID (0002,0002)
    end: int  # reader position of the first data set byte


def _read_meta(r: Reader) -> _Meta:
    """The file meta group (always explicit VR little endian, PS3.10 §7.1)."""
    walk = _Walk(r, implicit=False, little=True, encapsulated=None, where="byte")
    ts = sop_class = ""
    declared_end: int | None = None
    while True:
        start = r.pos
        head = r.read(8)
        if len(head) < 8 or int.from_bytes(head[0:2], "little") != 0x0002:
            r.unread(len(head))
            if declared_end is not None and start < declared_end:
                raise IncompleteInstance(
                    f"file meta declares {declared_end - start} bytes more (File Meta "
                    f"Information Group Length (0002,0000)) than were received before byte "
                    f"{start}")
            return _Meta(ts, sop_class, start)
        tag = 0x00020000 | int.from_bytes(head[2:4], "little")
        vr = head[4:6]
        if vr not in _VALID_VRS:
            raise IncompleteInstance(
                f"file meta element {tag_name(tag)} at byte {start} has no valid VR "
                f"(bytes {vr!r}); the file meta is always explicit VR (PS3.10 §7.1)")
        if vr in _LONG_VRS:
            extra = r.read(4)
            if len(extra) < 4:
                raise IncompleteInstance(f"file ends inside the header of {tag_name(tag)}")
            length = int.from_bytes(extra, "little")
        else:
            length = int.from_bytes(head[6:8], "little")
        if length == UNDEFINED:
            raise IncompleteInstance(f"file meta element {tag_name(tag)} has undefined length")
        if tag == FILE_META_GROUP_LENGTH and length == 4:
            value = r.read(4)
            if len(value) < 4:
                raise IncompleteInstance(f"file ends inside {tag_name(tag)} at byte {start}")
            declared_end = r.pos + int.from_bytes(value, "little")
        elif tag in (TRANSFER_SYNTAX_UID, MEDIA_STORAGE_SOP_CLASS_UID) and length <= 64:
            value = r.read(length)
            if len(value) < length:
                raise IncompleteInstance(
                    f"{tag_name(tag)} declares {length} bytes, {len(value)} received "
                    f"(element at byte {start})")
            text = value.rstrip(b"\0 ").decode("ascii", "replace")
            if tag == TRANSFER_SYNTAX_UID:
                ts = text
            else:
                sop_class = text
        else:
            walk._defined_length(tag, vr, False, length, start, None)


# -------------------------------------------------------------------- entry point
@dataclass(frozen=True)
class _Encoding:
    implicit: bool
    little: bool
    deflated: bool
    encapsulated: bool | None

    @classmethod
    def of(cls, ts: str) -> _Encoding:
        uid = UID(ts)
        if not uid.is_transfer_syntax:
            # PS3.5 §10: every transfer syntax but the two named ones is explicit VR LE.
            return cls(False, True, False, None)
        return cls(uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated,
                   uid.is_encapsulated)


def _starts_like_a_data_set(head: bytes) -> bool:
    """A bare data set (no preamble, as some old systems write) starts with group 0002
    or 0008 (SOP Class UID lives there), little or big endian."""
    if len(head) < 8:
        return False
    little = head[1] == 0 and head[0] in (0x02, 0x08) and head[3] == 0
    big = head[0] == 0 and head[1] == 0x08 and head[2] == 0
    return little or big


def _guess_bare(head: bytes) -> str:
    """Transfer syntax of a data set without file meta, guessed as pydicom does."""
    little = len(head) >= 2 and head[1] == 0
    explicit = len(head) >= 6 and head[4:6] in _VALID_VRS
    if not little:
        return _EXPLICIT_BE
    return _EXPLICIT_LE if explicit else _IMPLICIT_LE


def _walk_dataset(r: Reader, start: int, encoding: _Encoding, *, strict_order: bool = False
                  ) -> _Found:
    r.skip(start - r.pos)
    reader: Reader = InflatingReader(r) if encoding.deflated else r
    walk = _Walk(reader, implicit=encoding.implicit, little=encoding.little,
                 encapsulated=encoding.encapsulated,
                 where="inflated byte" if encoding.deflated else "byte")
    walk.strict_order = strict_order
    first = reader.pos
    walk.dataset(None, in_item=False, implicit=encoding.implicit, top=True)
    if reader.pos == first:
        raise IncompleteInstance(f"no data set follows the file meta (it ends at byte {start})")
    return walk.found


def _actual_encoding(open_reader: Callable[[], Reader], start: int, declared: str
                     ) -> str | None:
    """Another VR/byte order under which the (not deflated) data set walks cleanly."""
    claimed = _Encoding.of(declared)
    for ts in (_IMPLICIT_LE, _EXPLICIT_LE, _EXPLICIT_BE):
        other = _Encoding.of(ts)
        if (other.implicit, other.little) == (claimed.implicit, claimed.little) \
                and not claimed.deflated:
            continue
        try:
            _walk_dataset(open_reader(), start,
                          _Encoding(other.implicit, other.little, False, claimed.encapsulated),
                          strict_order=True)
        except (IncompleteInstance, InvalidAttribute):
            continue
        return ts
    return None


def check_complete(source: bytes | bytearray | memoryview | Path | BinaryIO) -> None:
    """Raise unless every element of the instance fits in the bytes given.

    `source` is Part-10 bytes (or a bare data set) in memory, a file (seeked over, never
    loaded whole), or a readable stream (read once, to its end only if the walk needs
    it). Raises `IncompleteInstance` naming the element, its declared length, what was
    received and where; `InvalidAttribute` for an image without Pixel Data; plain
    `InvalidInstance` when the bytes do not start like DICOM at all.
    """
    if isinstance(source, Path):
        with open(source, "rb") as fh:
            _check(lambda: _rewound(fh), can_rewind=True)
    elif isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        _check(lambda: MemoryReader(view), can_rewind=True)
    else:
        stream = StreamReader(source)
        _check(lambda: stream, can_rewind=False)


def _rewound(fh: BinaryIO) -> Reader:
    fh.seek(0)
    return FileReader(fh)


def _check(open_reader: Callable[[], Reader], *, can_rewind: bool) -> None:
    r = open_reader()
    head = r.read(PREAMBLE_LEN + 4)
    if len(head) == PREAMBLE_LEN + 4 and head[PREAMBLE_LEN:] == b"DICM":
        meta = _read_meta(r)
        if not meta.transfer_syntax_uid:
            raise IncompleteInstance("file meta has no TransferSyntaxUID (0002,0010)")
        ts = meta.transfer_syntax_uid
    else:
        if not _starts_like_a_data_set(head):
            raise InvalidInstance("not DICOM: no Part-10 header ('DICM' at byte 128) and "
                                  "no data set of group 0002 or 0008 at its start")
        if not can_rewind:
            r.unread(len(head))
        r = open_reader()
        meta = _read_meta(r)  # a bare data set may still start with group 0002
        first = r.read(8)
        ts = meta.transfer_syntax_uid or _guess_bare(first)
        if not can_rewind:
            r.unread(len(first))
    encoding = _Encoding.of(ts)
    try:
        found = _walk_dataset(open_reader(), meta.end, encoding)
    except IncompleteInstance as exc:
        actual = _actual_encoding(open_reader, meta.end, ts) if can_rewind else None
        if actual is None:
            raise
        raise IncompleteInstance(
            f"data set is encoded as {UID(actual).name}, but "
            f"TransferSyntaxUID (0002,0010) says {UID(ts).name} ({ts})") from exc
    _require_pixel_data(found, found.sop_class_uid or meta.sop_class_uid)


def _require_pixel_data(found: _Found, sop_class_uid: str) -> None:
    """PS3.3 C.7.6.3: Pixel Data is Type 1C in the Image Pixel module (required unless a
    Pixel Data Provider URL points elsewhere). An image without it is what a cut just
    before the Pixel Data element leaves: a well-formed, shorter, unviewable data set."""
    if found.pixel_data or found.pixel_data_provider_url:
        return
    name = UID(sop_class_uid).name if sop_class_uid else ""
    if found.rows or "Image Storage" in name:
        raise InvalidAttribute(
            f"Pixel Data (7FE0,0010) is missing from this {name or 'image'} (it has "
            "Rows (0028,0010)); the file may have been cut short before it")
