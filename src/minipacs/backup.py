"""`minipacs backup DEST` / `minipacs restore SRC`: index dump plus blobs, in a folder.

A backup is consistent while the server keeps running: every table is read in one
snapshot transaction (REPEATABLE READ on PostgreSQL, one read transaction on SQLite's WAL),
then the blobs those rows point at are copied and re-hashed. A blob deleted after the
snapshot is left out and its row is skipped on restore; a blob replaced after it (same
key, other bytes) is copied as it is now and re-indexed from its header on restore, the
blobs being the source of truth.

Layout: DEST/manifest.json, DEST/index/<table>.jsonl (one JSON object per row),
DEST/blobs/<blob key>.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, Table, delete, func, insert, select, text

from minipacs import __version__
from minipacs.archive import Archive
from minipacs.errors import MinipacsError, NotFound, StorageError
from minipacs.index.schema import head_revision

log = logging.getLogger(__name__)

FORMAT = "minipacs-backup/1"
_SKIP_TABLES = {"alembic_version"}


class BackupError(StorageError):
    """A backup cannot be written or restored (bad folder, non-empty index, ...)."""


@dataclass(frozen=True)
class BackupSummary:
    folder: Path
    revision: str
    rows: dict[str, int]
    blobs: int
    blob_bytes: int
    left_out: list[str] = field(default_factory=list)  # blobs gone since the snapshot
    reindexed: list[str] = field(default_factory=list)  # restore: re-indexed from blob


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _tables(connection: Connection) -> list[Table]:
    metadata = MetaData()
    metadata.reflect(bind=connection)
    return [t for t in metadata.sorted_tables if t.name not in _SKIP_TABLES]


def _copy_blob(archive: Archive, key: str, target: Path) -> tuple[int, str]:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with open(target, "wb") as out:
        for chunk in archive.store.iter_chunks(key):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


def backup(archive: Archive, dest: Path) -> BackupSummary:
    """Write a consistent backup of `archive` to the new or empty folder `dest`."""
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"backup folder {dest} is not empty; give a new or empty folder")
    (dest / "index").mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    instances: list[tuple[str, str]] = []
    engine = archive.engine
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with engine.connect() as connection, connection.begin():
        revision = MigrationContext.configure(connection).get_current_revision() or ""
        for table in _tables(connection):
            count = 0
            with open(dest / "index" / f"{table.name}.jsonl", "w", encoding="utf-8") as out:
                result = connection.execution_options(yield_per=1000).execute(
                    select(table).order_by(*table.primary_key.columns))
                for row in result.mappings():
                    out.write(json.dumps({k: _json_value(v) for k, v in row.items()},
                                         ensure_ascii=False) + "\n")
                    count += 1
                    if table.name == "instances":
                        instances.append((row["blob_key"], row["sha256"]))
            rows[table.name] = count
    blob_bytes = 0
    left_out: list[str] = []
    changed: list[str] = []
    for key, sha256 in instances:
        try:
            size, actual = _copy_blob(archive, key, dest / "blobs" / key)
        except NotFound:
            (dest / "blobs" / key).unlink(missing_ok=True)
            left_out.append(key)
            continue
        blob_bytes += size
        if actual != sha256:
            changed.append(key)
    manifest = {
        "format": FORMAT, "minipacs": __version__, "revision": revision,
        "created_at": datetime.now().astimezone().isoformat(), "rows": rows,
        "blobs": len(instances) - len(left_out), "blob_bytes": blob_bytes,
        "left_out": left_out, "changed_since_snapshot": changed,
    }
    # Written last: a folder without manifest.json is an unfinished backup.
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    log.info("backup of %d instances (%d bytes) written to %s", len(instances) - len(left_out),
             blob_bytes, dest)
    return BackupSummary(dest, revision, rows, len(instances) - len(left_out), blob_bytes,
                         left_out)


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def _python_value(table: Table, name: str, value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    try:
        python_type = table.c[name].type.python_type
    except NotImplementedError:
        return value
    if python_type is datetime:
        return datetime.fromisoformat(value)
    if python_type is date:
        return date.fromisoformat(value)
    return value


def restore(archive: Archive, src: Path, *, actor: str = "restore") -> BackupSummary:
    """Restore a backup folder into `archive`, whose index must be empty.

    Blobs are put first, then all rows go in one transaction: an interrupted restore
    leaves orphan blobs at worst, never rows without blobs.
    """
    manifest_path = src / "manifest.json"
    if not manifest_path.is_file():
        raise BackupError(f"{src} has no manifest.json: not a minipacs backup, or unfinished")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src} is in format {manifest.get('format')!r}; expected {FORMAT}")
    revision = str(manifest["revision"])
    if revision > head_revision():
        raise BackupError(f"backup is at index revision {revision}, newer than this "
                          f"minipacs ({head_revision()}); restore it with a newer version")
    if not archive.is_empty():
        raise BackupError("restore needs an empty index; point MINIPACS_DATABASE_URL at a new "
                          "database (or delete the old index) and try again")
    instance_rows = [row for row in _read_rows(src / "index" / "instances.jsonl")
                     if (src / "blobs" / row["blob_key"]).is_file()]
    skipped = {row["blob_key"] for row in _read_rows(src / "index" / "instances.jsonl")} - {
        row["blob_key"] for row in instance_rows}
    blob_bytes = 0
    for row in instance_rows:
        path = src / "blobs" / row["blob_key"]
        archive.store.put(row["blob_key"], path)
        blob_bytes += path.stat().st_size
    rows: dict[str, int] = {}
    with archive.write_engine.connect() as connection, connection.begin():
        tables = _tables(connection)
        # The index holds no instance, but a node that started once has made its first
        # account and audit events: the backup's accounts, tokens and audit trail (one
        # chain) replace them, as its patients and studies fill the empty tables.
        replaced = connection.scalar(select(func.count()).select_from(
            next(t for t in tables if t.name == "audit_events"))) or 0
        for table in reversed(tables):
            connection.execute(delete(table))
        for table in tables:
            source = (instance_rows if table.name == "instances"
                      else list(_read_rows(src / "index" / f"{table.name}.jsonl")))
            values = [{k: _python_value(table, k, v) for k, v in row.items() if k in table.c}
                      for row in source]
            for start in range(0, len(values), 1000):
                connection.execute(insert(table), values[start:start + 1000])
            rows[table.name] = len(values)
            if connection.dialect.name == "postgresql" and "id" in table.c and values:
                # Explicit ids bypassed the sequence; move it past them.
                highest = connection.scalar(select(func.max(table.c.id)))
                connection.execute(text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v)"),
                                   {"t": table.name, "v": highest})
    reindexed = []
    for key in manifest.get("changed_since_snapshot", []):
        if key in skipped:
            continue
        try:
            archive.index_blob(key, actor=actor)
            reindexed.append(key)
        except MinipacsError as exc:
            log.error("blob %s changed after the backup snapshot and cannot be indexed: %s",
                      key, exc)
    # A backup made before revision 0003 has no kept sequences: derive them.
    archive.refresh_sequences(only_missing=True)
    archive.audit("restore", actor, detail=f"restored {len(instance_rows)} instances from "
                  f"{src} (backup of {manifest.get('created_at')}); the {replaced} audit "
                  "events of this node before the restore were replaced by the backup's")
    log.info("restored %d instances from %s", len(instance_rows), src)
    return BackupSummary(src, revision, rows, len(instance_rows), blob_bytes,
                         sorted(skipped), reindexed)

