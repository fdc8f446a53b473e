"""The registry of remote DICOM Application Entities: who may do what, and where they are.

C-MOVE destinations, Storage Commitment report targets, access control for calling AE
titles and per-AE character-set options all come from here. The registry lives in the
index database, so every node of a cluster sees the same peers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Engine, Row, Table, bindparam, delete, select
from sqlalchemy.orm import Session, sessionmaker

from minipacs.access.tags import parse_tags, tags_text
from minipacs.errors import InvalidRequest, NotFound
from minipacs.index.database import create_schema, session_factory
from minipacs.index.models import RemoteApplicationEntity

# What a registered AE may ask of us (PS3.7 DIMSE services, grouped as staff think of them).
RIGHTS = ("store", "query", "retrieve", "worklist", "commitment")
ALL_RIGHTS = frozenset(RIGHTS)


class InvalidAE(InvalidRequest):
    """An AE registry entry with an impossible value (title, port, rights, charset)."""


@dataclass(frozen=True)
class RemoteAE:
    """One registered peer. `rights` is a subset of `RIGHTS`."""

    ae_title: str
    host: str
    port: int
    rights: frozenset[str] = field(default=ALL_RIGHTS)
    pin_ip: bool = False
    default_charset: str = ""
    charset_remap_from: str = ""
    charset_remap_to: str = ""
    ascii_responses: bool = False
    description: str = ""
    tls: bool = False  # we reach it over TLS (PS3.15 B.1)
    # Access tags (`access/tags.py`): given to studies it stores; limiting what it may
    # query and retrieve (empty: every study).
    store_tags: frozenset[str] = frozenset()
    access_tags: frozenset[str] = frozenset()

    def may(self, right: str) -> bool:
        return right in self.rights

    def as_json(self) -> dict[str, Any]:
        return {
            "ae_title": self.ae_title, "host": self.host, "port": self.port,
            "rights": sorted(self.rights), "pin_ip": self.pin_ip,
            "default_charset": self.default_charset,
            "charset_remap_from": self.charset_remap_from,
            "charset_remap_to": self.charset_remap_to,
            "ascii_responses": self.ascii_responses, "description": self.description,
            "tls": self.tls, "store_tags": sorted(self.store_tags),
            "access_tags": sorted(self.access_tags),
        }


def check_ae_title(title: str) -> str:
    """PS3.5 AE VR: 1-16 characters, no backslash or control characters; spaces trimmed."""
    value = title.strip()
    if not value or len(value) > 16 or "\\" in value or any(ord(c) < 32 for c in value):
        raise InvalidAE(
            f"AE title {title!r} must be 1 to 16 characters without backslash or "
            "control characters (PS3.5 AE VR)"
        )
    return value


def parse_rights(text: str | list[str] | frozenset[str]) -> frozenset[str]:
    """'store,query' or ['store', 'query'] → frozenset; 'all' means every right."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = {item.strip().lower() for item in items if item.strip()}
    if "all" in names:
        return ALL_RIGHTS
    unknown = names - ALL_RIGHTS
    if unknown:
        raise InvalidAE(
            f"unknown right(s) {', '.join(sorted(unknown))}; choose from {', '.join(RIGHTS)} "
            "or 'all'"
        )
    return frozenset(names)


def _check_charset(term: str, what: str) -> str:
    value = term.strip()
    from pydicom.charset import python_encoding  # pydicom is slow to import for the CLI

    if value and python_encoding.get(value) is None:
        raise InvalidAE(
            f"{what} {term!r} is not a DICOM character set term (e.g. 'ISO_IR 192', "
            "'ISO_IR 100'; PS3.3 C.12.1.1.2)"
        )
    return value


def validated(ae: RemoteAE) -> RemoteAE:
    """`ae` with a checked title, port, rights and charset terms; raises `InvalidAE`."""
    if not 1 <= ae.port <= 65535:
        raise InvalidAE(f"port {ae.port} of AE {ae.ae_title!r} must be 1 to 65535")
    if not ae.host.strip():
        raise InvalidAE(f"AE {ae.ae_title!r} needs a host (name or IP address)")
    if bool(ae.charset_remap_from) != bool(ae.charset_remap_to):
        raise InvalidAE("charset remap needs both 'from' and 'to' terms")
    return RemoteAE(
        ae_title=check_ae_title(ae.ae_title), host=ae.host.strip(), port=ae.port,
        rights=parse_rights(ae.rights), pin_ip=ae.pin_ip,
        default_charset=_check_charset(ae.default_charset, "default charset"),
        charset_remap_from=_check_charset(ae.charset_remap_from, "charset remap 'from'"),
        charset_remap_to=_check_charset(ae.charset_remap_to, "charset remap 'to'"),
        ascii_responses=ae.ascii_responses, description=ae.description[:256], tls=ae.tls,
        store_tags=parse_tags(ae.store_tags), access_tags=parse_tags(ae.access_tags),
    )


class AERegistry:
    """Add, list, look up and remove remote AEs. Thread-safe; one short session per call."""

    def __init__(self, engine: Engine, write_engine: Engine | None = None) -> None:
        self._engine = engine
        self._read: sessionmaker[Session] = session_factory(engine)
        self._write: sessionmaker[Session] = session_factory(write_engine or engine)
        self._write_lock = threading.Lock()
        create_schema(write_engine or engine)

    def put(self, ae: RemoteAE) -> RemoteAE:
        """Register `ae`, or replace the entry with the same title. Returns what was stored."""
        ae = validated(ae)
        with self._write_lock, self._write() as session, session.begin():
            row = session.scalars(
                select(RemoteApplicationEntity).where(
                    RemoteApplicationEntity.ae_title == ae.ae_title)
            ).one_or_none()
            if row is None:
                row = RemoteApplicationEntity(ae_title=ae.ae_title)
                session.add(row)
            row.host, row.port = ae.host, ae.port
            row.rights = ",".join(sorted(ae.rights))
            row.pin_ip = ae.pin_ip
            row.default_charset = ae.default_charset
            row.charset_remap_from = ae.charset_remap_from
            row.charset_remap_to = ae.charset_remap_to
            row.ascii_responses = ae.ascii_responses
            row.description = ae.description
            row.tls = ae.tls
            row.store_tags = tags_text(ae.store_tags)
            row.access_tags = tags_text(ae.access_tags)
        return ae

    def get(self, ae_title: str) -> RemoteAE | None:
        """The entry for `ae_title` (trailing spaces ignored), or None when unknown.

        Every association reads its calling AE's entry: one Core statement built once,
        without an ORM session (0.06 ms instead of 0.16; docs/performance.md, "Twelfth
        pass")."""
        with self._engine.connect() as connection:
            row = connection.execute(_BY_TITLE, {"title": ae_title.strip()}).first()
        return _to_record(row) if row is not None else None

    def all(self) -> list[RemoteAE]:
        with self._read() as session:
            rows = session.scalars(
                select(RemoteApplicationEntity).order_by(RemoteApplicationEntity.ae_title))
            return [_to_record(row) for row in rows]

    def remove(self, ae_title: str) -> None:
        """Forget `ae_title`; raises `NotFound` when it is not registered."""
        with self._write_lock, self._write() as session, session.begin():
            result = session.execute(
                delete(RemoteApplicationEntity).where(
                    RemoteApplicationEntity.ae_title == ae_title.strip())
            )
        if not getattr(result, "rowcount", 0):
            raise NotFound(f"AE {ae_title!r} is not registered; `minipacs ae list` shows those "
                           "that are")


_BY_TITLE = select(*cast(Table, RemoteApplicationEntity.__table__).c).where(
    RemoteApplicationEntity.ae_title == bindparam("title"))


def _to_record(row: RemoteApplicationEntity | Row[Any]) -> RemoteAE:
    return RemoteAE(
        ae_title=row.ae_title, host=row.host, port=row.port,
        rights=frozenset(r for r in row.rights.split(",") if r), pin_ip=row.pin_ip,
        default_charset=row.default_charset, charset_remap_from=row.charset_remap_from,
        charset_remap_to=row.charset_remap_to, ascii_responses=row.ascii_responses,
        description=row.description, tls=row.tls,
        store_tags=frozenset(t for t in row.store_tags.split(",") if t),
        access_tags=frozenset(t for t in row.access_tags.split(",") if t),
    )
