"""C-FIND SCP (Patient Root and Study Root): identifier → `Filter` → `Archive.find`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from minipacs.archive import Archive
from minipacs.dicom.json_model import dataset_from_json
from minipacs.dicom.matching import Filter, Match, parse_match
from minipacs.dicom.plain_encoding import json_value_bytes, padded_text
from minipacs.dimse.cancel import CANCEL_CHECK_EVERY, cancelled
from minipacs.dimse.status import (
    CANCEL,
    FIND_OUT_OF_RESOURCES,
    PENDING,
    find_failure,
    status_dataset,
)
from minipacs.dimse.storage_scp import peer_of
from minipacs.errors import MinipacsError, QueryError
from minipacs.index.query import LEVELS, Level

log = logging.getLogger(__name__)

_NOT_KEYS = {0x00080005, 0x00080052, 0x00080054}  # charset, level, RetrieveAETitle


def _element_text(elem: DataElement) -> str:
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


def identifier_filter(
    identifier: Dataset, *, fuzzy_names: bool = False
) -> tuple[Filter, list[DataElement]]:
    """Matching keys and return keys of a C-FIND identifier (PS3.4 C.2.2.1).

    A sequence key's item keys become matches keyed ``SEQUENCE.ITEM`` (deeper for
    nested sequences); raises `QueryError` for a sequence key with more than one item.
    `fuzzy_names`: person names match without regard to case or diacritics (fuzzy
    semantic matching, negotiated per association, PS3.4 C.2.2.2.1.1)."""
    matches: list[Match] = []
    requested: list[DataElement] = []
    for elem in identifier:
        if elem.tag in _NOT_KEYS or elem.tag.group == 0x0000:
            continue
        requested.append(elem)
        matches.extend(_element_matches(elem, f"{int(elem.tag):08X}", fuzzy_names))
    return Filter(tuple(matches)), requested


def _element_matches(elem: DataElement, key: str, fuzzy_names: bool) -> list[Match]:
    if elem.VR != "SQ":
        return [parse_match(key, _element_text(elem), fuzzy=fuzzy_names and elem.VR == "PN")]
    items = list(elem.value or [])
    if len(items) > 1:
        raise QueryError(f"{elem.keyword or key} has {len(items)} items; a sequence key "
                         "has one item (PS3.4 C.2.2.2.6)")
    # Sequence matching (C.2.2.2.6): the keys of the one item, recursively.
    return [m for item in items for sub in item
            for m in _element_matches(sub, f"{key}.{int(sub.tag):08X}", fuzzy_names)]


# Query/Retrieve FIND SOP classes whose extended negotiation we answer (PS3.4 C.5.1.1).
QUERY_FIND_MODELS = (
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Query/Retrieve Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Query/Retrieve Information Model - FIND
)
# Service-class-application-information bytes we support, by position (PS3.4 Table
# C.5-1): 1 relational-queries, 2 combined date-time matching, 3 fuzzy semantic
# matching of person names, 4 timezone query adjustment, 5 enhanced multi-frame
# image conversion. Only 1 and 3 are done.
_SUPPORTED_OPTIONS = (True, False, True, False, False)
_FUZZY_NAMES = 2  # index of byte 3


def negotiate_find_options(event: Any) -> dict[str, bytes]:
    """EVT_SOP_EXTENDED: for each FIND model the SCU asks options of, answer 1 for the
    options it asked for that we support, 0 for the rest, as many bytes as it sent."""
    answer: dict[str, bytes] = {}
    for uid, info in (event.app_info or {}).items():
        if str(uid) not in QUERY_FIND_MODELS or not info:
            continue
        answer[str(uid)] = bytes(
            1 if asked == 1 and n < len(_SUPPORTED_OPTIONS) and _SUPPORTED_OPTIONS[n] else 0
            for n, asked in enumerate(info)
        )
    if answer:
        log.info("extended negotiation from %s: asked %s, answered %s", peer_of(event),
                 {k: v.hex() for k, v in event.app_info.items()},
                 {k: v.hex() for k, v in answer.items()})
    return answer


def fuzzy_names_agreed(assoc: Any, model: str) -> bool:
    """Did this association agree on fuzzy semantic matching of person names for `model`?"""
    agreed = assoc.acceptor.sop_class_extended.get(model, b"")
    return len(agreed) > _FUZZY_NAMES and agreed[_FUZZY_NAMES] == 1


def pick_requested(source: Dataset, requested: list[DataElement]) -> Dataset:
    """The requested keys of `source`; unknown ones come back empty (PS3.4 C.2.2.3).

    A sequence key with an item that lists attributes returns each stored item with
    just those (recursively); an empty sequence or empty item returns whole items."""
    out = Dataset()
    for elem in requested:
        if elem.tag in source:
            value = source[elem.tag]
            if elem.VR == "SQ" and elem.value and value.VR == "SQ":
                wanted = list(elem.value[0])
                value = DataElement(
                    elem.tag, "SQ",
                    Sequence([pick_requested(item, wanted) if wanted else item
                              for item in value.value]),
                )
            out.add(value)
        else:
            out.add(DataElement(elem.tag, elem.VR, [] if elem.VR == "SQ" else None))
    return out


def _pydicom_response(match: dict[str, Any], requested: list[DataElement], level: str,
                      ae_title: str) -> Dataset:
    wanted = {f"{int(e.tag):08X}" for e in requested}
    ds = pick_requested(dataset_from_json({k: v for k, v in match.items() if k in wanted}),
                        requested)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    ds.RetrieveAETitle = ae_title
    return ds


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def response_dataset(
    match: dict[str, Any], requested: list[DataElement], level: str, ae_title: str
) -> Dataset:
    """The pending-response identifier: exactly the requested keys, filled when known.

    Plain values (text, names, integer strings) go in as raw elements holding their
    encoded bytes (`json_value_bytes`): pydicom decodes them only if someone reads them
    (a charset conversion for an old console) and writes them as they are, where
    building each element through `Dataset.from_json` cost ~0.1 ms per match. Anything
    else (a sequence key, binary or decimal values) is built through pydicom;
    tests/test_plain_encoding.py checks that both give the same identifier."""
    ds = Dataset()
    try:
        for elem in requested:
            stored = match.get(f"{elem.tag:08X}")
            if stored is None:
                if elem.VR == "SQ" or len(elem.VR) != 2:
                    return _pydicom_response(match, requested, level, ae_title)
                ds[elem.tag] = _raw(elem.tag, elem.VR, b"")
                continue
            value = json_value_bytes(stored)
            if value is None:
                return _pydicom_response(match, requested, level, ae_title)
            ds[elem.tag] = _raw(elem.tag, stored["vr"], value)
        ds[0x00080005] = _raw(0x00080005, "CS", b"ISO_IR 192")
        ds[0x00080052] = _raw(0x00080052, "CS", padded_text(level))
        ds[0x00080054] = _raw(0x00080054, "AE", padded_text(ae_title))
    except UnicodeEncodeError:
        return _pydicom_response(match, requested, level, ae_title)
    return ds


_DRAIN_TIMEOUT = 0.5  # seconds


def let_requests_in(assoc: Any) -> None:
    """Give a C-CANCEL that has arrived the chance to be read (PS3.7 9.3.2.3).

    pynetdicom's DUL reads the socket only when it has nothing left to send, so while
    pending responses stream out a C-CANCEL could sit unread until the last one. Before
    checking for a cancel, wait (at most half a second) until the outgoing queue is
    drained and no incoming data is waiting."""
    dul = getattr(assoc, "dul", None)
    if dul is None or dul.socket is None:
        return
    deadline = time.monotonic() + _DRAIN_TIMEOUT
    while time.monotonic() < deadline and (
        not dul.to_provider_queue.empty() or not dul.event_queue.empty() or dul.socket.ready
    ):
        time.sleep(0.0005)


def handle_find(
    event: Any, archive: Archive, ae_title: str
) -> Iterator[tuple[int | Dataset, Any]]:
    """EVT_C_FIND for Patient Root and Study Root: pending per match, C-CANCEL honoured."""
    peer = peer_of(event)
    try:
        identifier = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        if level not in LEVELS:
            raise QueryError(f"QueryRetrieveLevel {level!r} is not PATIENT/STUDY/SERIES/IMAGE")
        model = str(event.request.AffectedSOPClassUID)
        if level == "PATIENT" and model.startswith("1.2.840.10008.5.1.4.1.2.2"):
            raise QueryError("the Study Root model has no PATIENT level")
        fuzzy = fuzzy_names_agreed(event.assoc, model)
        filt, requested = identifier_filter(identifier, fuzzy_names=fuzzy)
        keys = [f"{int(e.tag):08X}" for e in requested]
        lvl: Level = level  # type: ignore[assignment]
        result = archive.find(lvl, filt, include=keys)
    except MinipacsError as exc:
        log.warning("C-FIND from %s refused: %s", peer, exc)
        yield find_failure(exc), None
        return
    except Exception as exc:  # a malformed identifier pydicom cannot decode
        log.warning("C-FIND from %s failed: %s", peer, exc)
        yield status_dataset(0xC000, str(exc)), None
        return
    log.info("C-FIND %s from %s: %d matches%s", level, peer, len(result.matches),
             " (truncated)" if result.truncated else "")
    for number, match in enumerate(result.matches):
        if number % CANCEL_CHECK_EVERY == 0:
            let_requests_in(event.assoc)
        if cancelled(event):
            yield CANCEL, None
            return
        yield PENDING, response_dataset(match, requested, level, ae_title)
    if result.truncated:
        # PS3.4 C.4.1.1.4 has no "partial results" status. The matches sent are valid;
        # the final 0xA700 (Refused: out of resources) tells the SCU the list is
        # incomplete, and ErrorComment says what to do about it.
        count = len(result.matches)
        log.warning("C-FIND %s from %s: more than %d matches (max_query_results); sent the "
                    "first %d and answered 0xA700", level, peer, count, count)
        yield status_dataset(FIND_OUT_OF_RESOURCES,
                             f"over {count} matches, first {count} sent: narrow the query"), None
