"""C-STORE SCP: bytes as received go to `Archive.ingest`; the status follows its outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from minipacs.archive import Archive
from minipacs.dimse.status import SUCCESS, status_dataset, store_failure
from minipacs.errors import MinipacsError

log = logging.getLogger(__name__)


def peer_of(event: Any) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title}@{requestor.address}"


def received_dataset(event: Any) -> bytes | Path:
    """The C-STORE dataset exactly as encoded by the sender, with file meta built from
    the presentation context (PS3.7 C-STORE; never decoded and re-encoded).

    A path when pynetdicom spooled it to a file as it arrived (`spool_incoming_datasets`),
    so a large instance never sits in memory; else the bytes."""
    path = event.dataset_path if hasattr(event.request, "_dataset_path") else None
    if path is not None:
        return Path(path)
    data: bytes = event.encoded_dataset(include_meta=True)
    return data


def handle_store(
    event: Any, archive: Archive,
    repair: Callable[[Any, bytes | Path], bytes | None] | None = None,
) -> int | Dataset:
    """EVT_C_STORE: success only once `ingest` returned, i.e. blob durable and row committed.

    `repair(event, part10)` may return corrected bytes (e.g. a relabelled character
    set for this sender); the answer is then 0xB000, coercion of data elements."""
    peer = peer_of(event)
    try:
        data = received_dataset(event)
    except Exception as exc:  # pynetdicom raises on a dataset it cannot frame
        log.warning("C-STORE from %s refused: could not read the dataset: %s", peer, exc)
        return status_dataset(0xC000, f"cannot read dataset: {exc}")
    repaired = repair(event, data) if repair is not None else None
    try:
        # pynetdicom's spool file is removed, never written, once we answer: the
        # store may keep it as the blob (a hard link) rather than copy it.
        result = archive.ingest(repaired or data, received_from=peer,
                                take=repaired is None and isinstance(data, Path))
    except MinipacsError as exc:
        log.warning("C-STORE of %s from %s refused: %s",
                    event.request.AffectedSOPInstanceUID, peer, exc)
        return store_failure(exc)
    if result.sop_instance_uid != str(event.request.AffectedSOPInstanceUID):
        log.warning("C-STORE from %s: AffectedSOPInstanceUID %s differs from dataset's %s",
                    peer, event.request.AffectedSOPInstanceUID, result.sop_instance_uid)
    if repaired is not None:
        # PS3.4 B.2.3: Warning, coercion of data elements.
        return status_dataset(0xB000, "(0008,0005) set per this AE's registry entry")
    return SUCCESS
