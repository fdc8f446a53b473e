"""Per-AE character-set options from the AE registry, applied at the DIMSE door.

Incoming: a sender's default charset (for data sets without (0008,0005)) or charset
remap (labelled X, really Y) relabels what it stores (`dicom.charsets.relabel_charset`)
and the identifiers of its queries.
Outgoing: C-FIND and worklist answers to an AE marked `ascii_responses` are
transliterated to ASCII; nothing stored changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from minipacs.ae_registry import RemoteAE
from minipacs.dicom.charsets import (
    ascii_dataset,
    charset_fix,
    relabel_charset,
    relabel_dataset,
)

log = logging.getLogger(__name__)


def charset_repair(entry_of: Callable[[Any], RemoteAE | None]
                   ) -> Callable[[Any, bytes | Path], bytes | None]:
    """`repair` for `handle_store`: relabel (0008,0005) as the sender's entry says.

    Only for senders with charset options in the registry is a spooled dataset read
    into memory. `entry_of(event)` is the sender's entry, read once per association
    (`AccessPolicy.entry`; an edited entry applies from the sender's next association)."""

    def repair(event: Any, part10: bytes | Path) -> bytes | None:
        ae = entry_of(event)
        if ae is None or not (ae.default_charset or ae.charset_remap_from):
            return None
        try:
            data = part10.read_bytes() if isinstance(part10, Path) else part10
            fixed = relabel_charset(data, ae.default_charset, ae.charset_remap_from,
                                    ae.charset_remap_to)
        except Exception as exc:  # unreadable data: let ingest refuse it with its reason
            log.debug("charset repair skipped for %s: %s", ae.ae_title, exc)
            return None
        if fixed is not None:
            log.info("C-STORE from %s: (0008,0005) relabelled per its registry entry",
                     ae.ae_title)
        return fixed

    return repair


def _repair_identifier(identifier: Dataset, ae: Any) -> None:
    """Label a query identifier's (0008,0005) as the sender's entry says, before any of
    its text is decoded: a modality that sends no (0008,0005) queries in the same
    charset it stores in, so its "Trần*" must match what it stored."""
    raw = identifier.get("SpecificCharacterSet")
    current = [] if not raw else [raw] if isinstance(raw, str) else [str(v) for v in raw]
    fixed = charset_fix(current, ae.default_charset, ae.charset_remap_from, ae.charset_remap_to)
    if fixed is not None:
        relabel_dataset(identifier, fixed)


def peer_charsets(
    handler: Callable[[Any], Iterator[Any]], entry_of: Callable[[Any], RemoteAE | None]
) -> Callable[[Any], Iterator[Any]]:
    """Wrap a C-FIND handler with the caller's charset options: its identifier is
    relabelled like its stored data (default charset, remap), and pending identifiers go
    out in ASCII to AEs that need it."""

    def wrapped(event: Any) -> Iterator[Any]:
        ae = entry_of(event)
        if ae is not None and (ae.default_charset or ae.charset_remap_from):
            try:
                # pynetdicom decodes the identifier once and caches it: the handler
                # sees the relabelled data set.
                _repair_identifier(event.identifier, ae)
            except Exception as exc:  # undecodable: the handler refuses it with its reason
                log.debug("identifier charset repair skipped for %s: %s", ae.ae_title, exc)
        if ae is None or not ae.ascii_responses:
            yield from handler(event)
            return
        for status, identifier in handler(event):
            if isinstance(identifier, Dataset):
                identifier = ascii_dataset(identifier)
            yield status, identifier

    return wrapped
