"""Per-AE character-set options from the AE registry, applied at the DIMSE door.

Incoming: a sender's default charset (for data sets without (0008,0005)) or charset
remap (labelled X, really Y) relabels what it stores (`dicom.charsets.relabel_charset`).
Outgoing: C-FIND and worklist answers to an AE marked `ascii_responses` are
transliterated to ASCII; nothing stored changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset

from minipacs.ae_registry import AERegistry
from minipacs.dicom.charsets import ascii_dataset, relabel_charset

log = logging.getLogger(__name__)


def _calling(event: Any) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def charset_repair(registry: AERegistry) -> Callable[[Any, bytes], bytes | None]:
    """`repair` for `handle_store`: relabel (0008,0005) as the sender's entry says."""

    def repair(event: Any, part10: bytes) -> bytes | None:
        ae = registry.get(_calling(event))
        if ae is None or not (ae.default_charset or ae.charset_remap_from):
            return None
        try:
            fixed = relabel_charset(part10, ae.default_charset, ae.charset_remap_from,
                                    ae.charset_remap_to)
        except Exception as exc:  # unreadable data: let ingest refuse it with its reason
            log.debug("charset repair skipped for %s: %s", ae.ae_title, exc)
            return None
        if fixed is not None:
            log.info("C-STORE from %s: (0008,0005) relabelled per its registry entry",
                     ae.ae_title)
        return fixed

    return repair


def ascii_for_ascii_peers(
    handler: Callable[[Any], Iterator[Any]], registry: AERegistry
) -> Callable[[Any], Iterator[Any]]:
    """Wrap a C-FIND handler: pending identifiers go out in ASCII to AEs that need it."""

    def wrapped(event: Any) -> Iterator[Any]:
        ae = registry.get(_calling(event))
        if ae is None or not ae.ascii_responses:
            yield from handler(event)
            return
        for status, identifier in handler(event):
            if isinstance(identifier, Dataset):
                identifier = ascii_dataset(identifier)
            yield status, identifier

    return wrapped
