"""Signed checkpoints of the audit chain's head, kept in the blob store, not the index.

Someone able to rewrite the index could recompute every hash of a doctored tail, or cut
the tail off; they cannot forge a checkpoint without the key, which lives outside the
database (a setting, or a file in the data folder). `verify_against_checkpoints` checks
that each checkpointed event is still there with the hash it had.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from minipacs.audit.chain import utc_now
from minipacs.errors import NotFound
from minipacs.index.models import AuditEvent, AuditHead
from minipacs.storage import BlobStore

log = logging.getLogger(__name__)

PREFIX = "audit/checkpoints/"


def load_key(key_text: str | None, data_dir: Path) -> bytes:
    """The signing key: MINIPACS_AUDIT_KEY when set (every node of a cluster sets the
    same), else DATA_DIR/audit.key, created (0600) on first use."""
    if key_text:
        return key_text.encode("utf-8")
    path = data_dir / "audit.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")


def _sign(key: bytes, seq: int, digest: str) -> str:
    return hmac.new(key, f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str
    signature: str


def write_checkpoint(engine: Engine, store: BlobStore, key: bytes) -> Checkpoint | None:
    """Sign the chain's current head and put it in the blob store (None: empty chain)."""
    with Session(engine) as session:
        head = session.get(AuditHead, 1)
    if head is None or head.seq == 0:
        return None
    checkpoint = Checkpoint(head.seq, head.hash, utc_now().isoformat() + "Z",
                            _sign(key, head.seq, head.hash))
    body = json.dumps(checkpoint.__dict__).encode()
    store.put(f"{PREFIX}{head.seq:012d}.json", body)
    return checkpoint


def read_checkpoints(store: BlobStore) -> list[Checkpoint]:
    found = []
    for blob_key in store.keys(PREFIX):
        try:
            found.append(Checkpoint(**json.loads(store.read(blob_key))))
        except (NotFound, ValueError, TypeError) as exc:
            log.warning("audit checkpoint %s unreadable: %s", blob_key, exc)
    return sorted(found, key=lambda c: c.seq)


def verify_against_checkpoints(engine: Engine, store: BlobStore, key: bytes
                               ) -> tuple[int, str]:
    """(checkpoints checked, problem or ""). A checkpoint with a bad signature, or whose
    event is gone or hashes otherwise now, is a problem: the tail was cut or rewritten."""
    checkpoints = read_checkpoints(store)
    with Session(engine) as session:
        head = session.get(AuditHead, 1)
        pruned_up_to = head.base_seq if head is not None else 0
        for cp in checkpoints:
            if cp.seq <= pruned_up_to:
                continue  # that part of the trail was pruned under the retention setting
            if not hmac.compare_digest(cp.signature, _sign(key, cp.seq, cp.hash)):
                return len(checkpoints), f"checkpoint {cp.seq} has an invalid signature"
            stored = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == cp.seq))
            if stored is None:
                return len(checkpoints), (f"event {cp.seq}, checkpointed at {cp.at}, is gone: "
                                          "the end of the trail was removed")
            if stored != cp.hash:
                return len(checkpoints), (f"event {cp.seq} no longer has the hash "
                                          f"checkpointed at {cp.at}: the trail was rewritten")
    return len(checkpoints), ""
