"""The change feed (`GET /changes`): what arrives, in commit order, resumable by sequence
number, durable across restarts, one feed for several nodes, and only for callers who
may query (audited as a query)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from backends import Backends
from conftest import ServerProcess
from dimse_peers import storescu
from factories import make_instance
from node_tools import c_store_status


def _write(folder: Path, study: str, series: list[str], per_series: int,
           patient_id: str = "FEED01") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s_index, series_uid in enumerate(series):
        for i in range(per_series):
            sop = generate_uid()
            path = folder / f"{s_index}-{i}-{sop}.dcm"
            path.write_bytes(make_instance(study_uid=study, series_uid=series_uid,
                                           sop_uid=sop, patient_id=patient_id,
                                           InstanceNumber=i + 1))
            paths.append(path)
    return paths


def _page(server: ServerProcess, since: int, limit: int = 100,
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = httpx.get(f"{server.http_url}/changes", params={"since": since, "limit": limit},
                         headers=headers or server.auth, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _all(server: ServerProcess, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(1000):
        page = _page(server, since, limit)
        out += page["changes"]
        since = page["last"]
        if page["done"]:
            return out
    raise AssertionError("the feed never said done")


def test_storescu_study_lists_study_series_instances_created_in_order_and_resumes(
    empty_server: ServerProcess, tmp_path: Path
) -> None:
    study, series = generate_uid(), [generate_uid(), generate_uid()]
    paths = _write(tmp_path / "in", study, series, per_series=2)
    assert storescu(empty_server, *paths).returncode == 0

    changes = _all(empty_server)
    assert [c["seq"] for c in changes] == list(range(1, 8))  # no gaps, in order
    assert [(c["kind"], c["level"]) for c in changes] == [
        ("created", "study"), ("created", "series"), ("created", "instance"),
        ("created", "instance"), ("created", "series"), ("created", "instance"),
        ("created", "instance")]
    assert {c["study_instance_uid"] for c in changes} == {study}
    assert [c["series_instance_uid"] for c in changes if c["level"] == "series"] == series
    sent = [p.name.split("-", 2)[2].removesuffix(".dcm") for p in paths]
    assert [c["sop_instance_uid"] for c in changes if c["level"] == "instance"] == sent
    assert {c["patient_id"] for c in changes} == {"FEED01"}
    assert all(c["at"].endswith("Z") for c in changes)

    # Paging by two gives the same feed; the last page says done; since=last is empty.
    assert _all(empty_server, limit=2) == changes
    first = _page(empty_server, 0, limit=3)
    assert (first["last"], first["done"]) == (3, False)
    rest = _page(empty_server, first["last"], limit=100)
    assert [c["seq"] for c in rest["changes"]] == [4, 5, 6, 7] and rest["done"]
    assert _page(empty_server, 7) == {"changes": [], "last": 7, "done": True}

    # The same bytes again change nothing; other bytes under one SOP UID are an update.
    assert storescu(empty_server, paths[0]).returncode == 0
    assert _page(empty_server, 7)["changes"] == []
    paths[0].write_bytes(make_instance(study_uid=study, series_uid=series[0],
                                       sop_uid=sent[0], patient_id="FEED01",
                                       InstanceNumber=9))
    assert storescu(empty_server, paths[0]).returncode == 0
    updated = _page(empty_server, 7)["changes"]
    assert [(c["seq"], c["kind"], c["level"], c["sop_instance_uid"]) for c in updated] == [
        (8, "updated", "instance", sent[0])]


def test_delete_is_a_change_and_the_sequence_continues_after_a_restart(
    empty_server: ServerProcess, tmp_path: Path
) -> None:
    study, series = generate_uid(), [generate_uid(), generate_uid()]
    assert storescu(empty_server, *_write(tmp_path / "a", study, series, 1)).returncode == 0
    before = _page(empty_server, 0)["last"]
    assert before == 5
    deleted = empty_server.http.delete(f"/admin/studies/{study}")
    assert deleted.status_code == 200, deleted.text
    gone = _page(empty_server, before)
    assert [(c["seq"], c["kind"], c["level"], c["series_instance_uid"])
            for c in gone["changes"]] == [(6, "deleted", "study", None),
                                          (7, "deleted", "series", series[0]),
                                          (8, "deleted", "series", series[1])]

    feed = _all(empty_server)
    empty_server.stop()
    empty_server.start()
    assert _all(empty_server) == feed  # durable: the same feed after the restart
    assert [c["seq"] for c in feed] == list(range(1, 9))
    other = generate_uid()
    assert storescu(empty_server, *_write(tmp_path / "b", other, [generate_uid()], 1)
                    ).returncode == 0
    after = _page(empty_server, 8)["changes"]
    assert [(c["seq"], c["level"]) for c in after] == [(9, "study"), (10, "series"),
                                                       (11, "instance")]
    assert {c["study_instance_uid"] for c in after} == {other}


def test_changes_need_the_query_right_and_are_audited_as_a_query(
    empty_server: ServerProcess, tmp_path: Path
) -> None:
    study = generate_uid()
    assert storescu(empty_server, *_write(tmp_path, study, [generate_uid()], 1,
                                          patient_id="FEEDAUD")).returncode == 0
    url = f"{empty_server.http_url}/changes"
    assert httpx.get(url, timeout=30).status_code == 401
    for role, expected in (("emr", 200), ("clinician", 200), ("research", 403),
                           ("auditor", 403)):
        token = empty_server.create_token(f"feed-{role}", role)
        answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == expected, (role, answer.text)
    bad = httpx.get(url, params={"since": -1}, headers=empty_server.auth, timeout=30)
    assert bad.status_code == 400 and "since=-1" in bad.text
    too_many = httpx.get(url, params={"limit": 5000}, headers=empty_server.auth, timeout=30)
    assert too_many.status_code == 400 and "limit=5000" in too_many.text
    events = empty_server.http.get("/admin/audit", params={
        "action": "query", "actor": "token:feed-emr"}).json()
    assert any("changes since 0: 3 changes" in e["detail"] and "FEEDAUD" in e["detail"]
               for e in events), events


@pytest.fixture
def two_nodes(backends: Backends, tmp_path: Path) -> Iterator[tuple[ServerProcess, ...]]:
    """Two `minipacs serve` processes on one PostgreSQL database and one S3 bucket."""
    shared = {"database_url": backends.postgres.create_database(), **backends.s3_settings()}
    nodes = []
    try:
        for name in ("node-a", "node-b"):
            (tmp_path / name).mkdir()
            nodes.append(ServerProcess(
                tmp_path / name, ["--no-load-samples", *backends.server_args(shared)]).start())
        yield tuple(nodes)
    finally:
        for node in nodes:
            node.stop()


def test_two_nodes_writing_at_once_give_one_feed_a_poller_never_skips(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    node_a, node_b = two_nodes
    studies = [generate_uid() for _ in range(4)]
    jobs: list[tuple[ServerProcess, bytes]] = []
    for n, study in enumerate(studies):
        series = generate_uid()
        for i in range(6):
            node = (node_a, node_b)[(n + i) % 2]  # every study through both nodes
            jobs.append((node, make_instance(study_uid=study, series_uid=series,
                                             patient_id=f"NODES{n}", InstanceNumber=i + 1)))
    failures: list[str] = []
    polled: list[dict[str, Any]] = []
    stop = threading.Event()

    def send(work: list[tuple[ServerProcess, bytes]]) -> None:
        for node, part10 in work:
            status = c_store_status(node, part10)
            if status != 0:
                failures.append(f"C-STORE status 0x{status:04X}")

    def poll() -> None:  # an EMR polling both nodes in turn while they write
        since, deadline = 0, time.monotonic() + 120
        for turn in range(100_000):
            if time.monotonic() > deadline:
                failures.append("poller out of time")
                return
            # Every store was acknowledged (committed) before `stop`: a page read
            # after seeing it set, and done, has seen everything.
            all_sent = stop.is_set()
            page = _page((node_a, node_b)[turn % 2], since, limit=7)
            polled.extend(page["changes"])
            since = page["last"]
            if all_sent and page["done"]:
                return

    senders = [threading.Thread(target=send, args=(jobs[k::4],)) for k in range(4)]
    poller = threading.Thread(target=poll)
    poller.start()
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(timeout=300)
    stop.set()
    poller.join(timeout=300)
    assert not failures, failures

    full = _all(node_a)
    assert _all(node_b) == full  # one feed, whichever node answers
    assert [c["seq"] for c in full] == list(range(1, len(full) + 1))  # no gaps
    assert polled == full  # polling while writing skipped nothing, repeated nothing
    instances = [c for c in full if c["level"] == "instance"]
    assert len(instances) == len(jobs) == len({c["sop_instance_uid"] for c in instances})
    assert all(c["kind"] == "created" for c in instances)
    created_studies = [c["study_instance_uid"] for c in full if c["level"] == "study"]
    assert sorted(created_studies) == sorted(studies)  # each study created exactly once
    for study in studies:  # and before any of its instances
        seqs = [c["seq"] for c in full if c["study_instance_uid"] == study]
        first = next(c for c in full if c["study_instance_uid"] == study)
        assert (first["level"], first["seq"]) == ("study", min(seqs))
