"""The audit trail: who did what to which patient, through each door, and
`minipacs audit verify` catching a record changed, deleted, inserted, cut or rewritten."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, delete, insert, select, update
from sqlalchemy.orm import Session

from conftest import ServerProcess
from dicomweb_peers import store
from dimse_peers import storescu
from factories import make_instance
from minipacs.archive import Archive
from minipacs.audit.chain import AuditRecord, append, event_hash, prune, utc_now
from minipacs.audit.chain import verify as verify_chain
from minipacs.audit.checkpoints import verify_against_checkpoints, write_checkpoint
from minipacs.index.models import AuditEvent, AuditHead


def index_engine(server: ServerProcess) -> Engine:
    """The server's index, opened the way a database administrator (or an attacker with
    the database password) would: directly, not through minipacs."""
    args = server.extra_args
    url = args[args.index("--database-url") + 1] if "--database-url" in args else \
        f"sqlite:///{server.data_dir / 'index.sqlite'}"
    return create_engine(url)


def events(engine: Engine, **where: str) -> list[AuditEvent]:
    with engine.connect() as connection:
        stmt = select(AuditEvent).order_by(AuditEvent.seq)
        for column, value in where.items():
            stmt = stmt.where(getattr(AuditEvent, column) == value)
        return list(connection.execute(stmt))  # type: ignore[arg-type]


def verify(server: ServerProcess) -> tuple[int, str]:
    done = server.cli("audit", "verify")
    return done.returncode, done.stdout + done.stderr


def test_audit_verify_names_a_changed_a_deleted_and_an_inserted_event(
    empty_server: ServerProcess,
) -> None:
    server = empty_server
    for _ in range(3):  # some events: queries by the tests' admin token
        assert server.http.get("/dicom-web/studies").status_code == 200
    code, out = verify(server)
    assert code == 0 and "intact" in out, out
    engine = index_engine(server)
    third = events(engine)[2]
    with engine.begin() as c:
        c.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(detail="nothing here"))
    code, out = verify(server)
    assert code == 1 and "event 3" in out and "changed" in out, out
    with engine.begin() as c:
        c.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(detail=third.detail))
        c.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
    code, out = verify(server)
    assert code == 1 and "event 2 is missing" in out, out
    second_hash = event_hash(events(engine)[0].hash, 2, third.at,
                             AuditRecord("login", "user:x"))
    with engine.begin() as c:
        c.execute(insert(AuditEvent).values(
            at=third.at, action="login", actor="user:x", seq=2, prev_hash=events(engine)[0].hash,
            hash=second_hash))
    code, out = verify(server)
    assert code == 1 and "event 3 does not follow event 2" in out, out
    with engine.begin() as c:
        c.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
        c.execute(insert(AuditEvent).values(at=third.at, action="view", actor="user:x"))
    code, out = verify(server)
    assert code == 1 and "inserted outside the chain" in out, out
    engine.dispose()


def test_audit_verify_catches_a_cut_or_rewritten_tail_against_its_checkpoints(
    empty_server: ServerProcess,
) -> None:
    server = empty_server
    assert server.http.get("/dicom-web/studies").status_code == 200
    code, out = verify(server)  # signs a checkpoint of the head
    assert code == 0 and "new checkpoint" in out, out
    engine = index_engine(server)
    head = events(engine)[-1]
    # Rewrite the checkpointed event and recompute its hash and the head: the chain
    # itself is consistent again, only the checkpoint can tell.
    record = AuditRecord(head.action, head.actor, head.role, head.source, head.patient_id,
                         head.study_instance_uid, head.outcome, "rewritten")
    forged = event_hash(head.prev_hash, head.seq, head.at, record)
    with engine.begin() as c:
        c.execute(update(AuditEvent).where(AuditEvent.seq == head.seq)
                  .values(detail="rewritten", hash=forged))
        c.execute(update(AuditHead).values(hash=forged))
    code, out = verify(server)
    assert code == 1 and f"event {head.seq} no longer has the hash" in out, out
    # Cut it off instead, with the head moved back to the event before.
    before = events(engine)[-2]
    with engine.begin() as c:
        c.execute(delete(AuditEvent).where(AuditEvent.seq >= head.seq))
        c.execute(update(AuditHead).values(seq=before.seq, hash=before.hash))
    code, out = verify(server)
    assert code == 1 and f"event {head.seq}" in out and "is gone" in out, out
    engine.dispose()


@pytest.mark.parametrize("role", ["clinician"])
def test_queries_views_and_refusals_are_recorded_with_actor_source_and_patient(
    empty_server: ServerProcess, role: str
) -> None:
    server = empty_server
    (stored,) = store(server, make_instance(patient_id="BN-AUDIT-7",
                                            patient_name="Lê^Thị Hồng"))
    token = server.create_token("dr-audit", role)
    doctor = httpx.Client(base_url=server.dicomweb_url,
                          headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert doctor.get("/studies", params={"PatientID": "BN-AUDIT-7"}).status_code == 200
    assert doctor.get(f"/studies/{stored.study}/metadata").status_code == 200
    assert doctor.get(f"/studies/{stored.study}").status_code == 403  # no download
    doctor.close()
    auditor = server.create_token("kiem-toan", "auditor")
    trail = httpx.get(f"{server.http_url}/admin/audit",
                      params={"actor": "token:dr-audit"},
                      headers={"Authorization": f"Bearer {auditor}"}).json()
    by_action = {e["action"]: e for e in trail}
    assert by_action["query"]["patient_id"] == "BN-AUDIT-7"
    assert by_action["query"]["source"] == "127.0.0.1"
    assert by_action["query"]["role"] == role
    assert by_action["view"]["study_instance_uid"] == stored.study
    assert by_action["view"]["patient_id"] == "BN-AUDIT-7"
    assert by_action["download"]["outcome"] == "refused"
    # The auditor reads the trail and nothing else; reading it is itself recorded.
    assert httpx.get(f"{server.dicomweb_url}/studies",
                     headers={"Authorization": f"Bearer {auditor}"}).status_code == 403
    engine = index_engine(server)
    assert events(engine, action="read-audit", actor="token:kiem-toan")
    engine.dispose()


def test_stores_and_associations_are_recorded_for_each_door(
    empty_server: ServerProcess, tmp_path: Path
) -> None:
    server = empty_server
    path = tmp_path / "ct.dcm"
    path.write_bytes(make_instance(patient_id="BN-STORE-AUDIT"))
    assert storescu(server, path).returncode == 0  # dcmtk: calling AE STORESCU
    (stowed,) = store(server, make_instance(patient_id="BN-STOW-AUDIT"))
    engine = index_engine(server)
    by_dimse = events(engine, action="store", patient_id="BN-STORE-AUDIT")
    assert [(e.actor, e.source) for e in by_dimse] == [("ae:STORESCU", "127.0.0.1")]
    associations = events(engine, action="association", actor="ae:STORESCU")
    assert associations and associations[0].role == "dicom-node"
    by_http = events(engine, action="store", patient_id="BN-STOW-AUDIT")
    assert [(e.actor, e.study_instance_uid) for e in by_http] == [
        ("token:tests-admin", stowed.study)]
    engine.dispose()


def test_retention_prunes_old_events_and_the_rest_still_verifies(archive: Archive) -> None:
    for n in range(5):
        archive.audit("view", f"user:reader{n}", "BN-OLD", detail="an old read")
    checkpoint_key = b"k" * 32
    assert write_checkpoint(archive.engine, archive.store, checkpoint_key) is not None
    cutoff = utc_now() + timedelta(seconds=1)  # everything so far counts as "old"
    with archive.write_engine.begin() as connection, Session(bind=connection) as session:
        pruned = prune(session, cutoff, "system:tests")
        session.flush()
    assert pruned == 5
    archive.audit("view", "user:reader9", "BN-NEW", detail="a new read")
    report = verify_chain(archive.engine)
    assert report.ok, report.problem
    assert verify_against_checkpoints(archive.engine, archive.store, checkpoint_key)[1] == ""
    remaining = events(archive.engine)
    assert [e.action for e in remaining] == ["audit-prune", "view"]
    assert "5 events" in remaining[0].detail
    # Pruning does not open a gap for tampering: the next event still must follow.
    with archive.write_engine.begin() as connection:
        connection.execute(update(AuditEvent).where(AuditEvent.seq == remaining[0].seq)
                           .values(detail="nothing was pruned"))
    assert not verify_chain(archive.engine).ok


def test_two_nodes_and_a_rolled_back_append_keep_one_chain(archive: Archive) -> None:
    """Each process advances the head from the one it left last, without reading it
    (`chain._last_head`). That guess goes stale when another node appends or an append
    rolls back; a stale guess must cost a read, never fork the chain."""
    node_a, node_b = archive.write_engine, create_engine(archive.write_engine.url)

    def append_on(engine: Engine, detail: str, *, commit: bool = True) -> None:
        with Session(engine) as session:
            with session.begin() as transaction:
                append(session, AuditRecord("test-append", "system:tests", detail=detail))
                if not commit:
                    transaction.rollback()

    try:
        append_on(node_a, "1")
        append_on(node_a, "2")  # from the head node A left
        append_on(node_b, "3")
        append_on(node_a, "4")  # node B moved the head: A's guess is stale
        append_on(node_a, "rolled back", commit=False)
        append_on(node_a, "5")  # A's guess is the rolled-back event's
    finally:
        node_b.dispose()
    report = verify_chain(archive.engine)
    assert report.ok, report.problem
    mine = [e for e in events(archive.engine) if e.action == "test-append"]
    assert [e.detail for e in mine] == ["1", "2", "3", "4", "5"]
    assert [e.seq for e in mine] == list(range(mine[0].seq, mine[0].seq + 5))
    with Session(archive.engine) as session:
        head = session.get(AuditHead, 1)
        assert head is not None and (head.seq, head.hash) == (mine[-1].seq, mine[-1].hash)


def test_cli_prune_keeps_recent_events(empty_server: ServerProcess) -> None:
    done = empty_server.cli("audit", "prune", "--older-than-days", "30")
    assert done.returncode == 0 and "0 audit events older than 30 days pruned" in done.stdout
    code, out = verify(empty_server)
    assert code == 0, out
