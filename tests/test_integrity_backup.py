"""verify / --rebuild-index, backup / restore while serving, delete (CLI and admin API).

Every test runs on the backends of the run (SQLite + folder, or PostgreSQL + S3)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

from backends import Backends
from conftest import ServerProcess, open_test_archive
from dimse_peers import storescu
from factories import make_instance
from minipacs.archive import Archive
from minipacs.config import Settings
from minipacs.dicom.matching import Filter
from minipacs.errors import NotFound
from minipacs.index.models import AuditEvent
from minipacs.integrity import verify
from minipacs.storage import instance_key
from node_tools import minipacs_cli, server_settings


def test_verify_finds_missing_corrupt_and_orphaned_blobs_and_rebuild_repairs_the_index(
    archive: Archive,
) -> None:
    kept, lost, damaged = (archive.ingest(make_instance()) for _ in range(3))
    orphan_study, orphan_series, orphan_sop = generate_uid(), generate_uid(), generate_uid()
    orphan_key = instance_key(orphan_study, orphan_series, orphan_sop)
    # A blob written just before a crash, its index transaction never committed:
    archive.store.put(orphan_key, make_instance(study_uid=orphan_study, series_uid=orphan_series,
                                                sop_uid=orphan_sop))
    lost_key = archive.instances(sop_instance_uid=lost.sop_instance_uid)[0].blob_key
    damaged_key = archive.instances(sop_instance_uid=damaged.sop_instance_uid)[0].blob_key
    archive.store.delete(lost_key)
    archive.store.put(damaged_key, b"bit rot" * 100)

    report = verify(archive)
    assert (report.checked, report.missing, report.corrupt, report.orphans) == (
        3, [lost_key], [damaged_key], [orphan_key])
    assert not report.healthy
    assert archive.counts()["instances"] == 3  # reporting changes nothing

    repaired = verify(archive, rebuild_index=True)
    assert repaired.forgotten == [lost_key] and repaired.reindexed == [orphan_key]
    with pytest.raises(NotFound):
        archive.instances(sop_instance_uid=lost.sop_instance_uid)
    (found,) = archive.instances(orphan_study)
    assert found.sop_instance_uid == orphan_sop
    assert archive.instances(sop_instance_uid=kept.sop_instance_uid)
    after = verify(archive)
    assert (after.missing, after.orphans, after.corrupt) == ([], [], [damaged_key])


def test_verify_command_exits_1_on_orphans_and_0_once_rebuilt(
    archive: Archive, settings: Settings
) -> None:
    archive.ingest(make_instance())
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    archive.store.put(instance_key(study, series, sop),
                      make_instance(study_uid=study, series_uid=series, sop_uid=sop))
    broken = minipacs_cli(settings, "verify")
    assert broken.returncode == 1 and "--rebuild-index" in broken.stdout
    assert "1 instances checked: 0 missing, 0 corrupt, 1 orphaned blobs" in broken.stdout
    rebuilt = minipacs_cli(settings, "verify", "--rebuild-index")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "(indexed)" in rebuilt.stdout
    assert archive.instances(study)


def test_backup_while_serving_restores_byte_identical_into_an_empty_archive(
    empty_server: ServerProcess, backends: Backends, tmp_path: Path
) -> None:
    files = []
    for n in range(6):
        path = tmp_path / f"before{n}.dcm"
        path.write_bytes(make_instance(patient_name=f"Lê^Thị {n}", patient_id=f"BK-{n}"))
        files.append(path)
    assert storescu(empty_server, *files).returncode == 0
    stop = threading.Event()
    pushed_during: list[int] = []

    def keep_pushing() -> None:  # the server keeps ingesting while the backup runs
        n = 0
        while not stop.is_set():
            path = tmp_path / f"during{n}.dcm"
            path.write_bytes(make_instance())
            pushed_during.append(storescu(empty_server, path).returncode)
            n += 1

    pusher = threading.Thread(target=keep_pushing)
    pusher.start()
    try:
        source = server_settings(empty_server)
        made = minipacs_cli(source, "backup", str(tmp_path / "backup"))
    finally:
        stop.set()
        pusher.join()
    assert made.returncode == 0, made.stdout + made.stderr
    assert all(code == 0 for code in pushed_during)

    target = Settings(data_dir=tmp_path / "restored", load_samples=False, **backends.settings())
    restored = minipacs_cli(target, "restore", str(tmp_path / "backup"))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    # Accounts' hashes, TOTP secrets and patients' data: the backup and the restored copy
    # are readable by the account that made them only, whatever the shell's umask.
    assert any(p.is_file() for p in (tmp_path / "backup").rglob("*"))
    for folder in (tmp_path / "backup", target.data_dir):
        paths = [folder, *folder.rglob("*")]
        loose = [f"{p}: {p.stat().st_mode & 0o777:o}" for p in paths
                 if p.stat().st_mode & 0o077]
        assert loose == [], loose
    again = minipacs_cli(target, "restore", str(tmp_path / "backup"))
    assert again.returncode == 2 and "empty index" in again.stderr

    original, copy = open_test_archive(source), open_test_archive(target)
    try:
        copied = {r.sop_instance_uid: r for r in copy.iter_instance_records()}
        for path in files:  # everything stored before the backup began is in it
            sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            (record,) = original.instances(sop_instance_uid=sop)
            assert copy.read_instance(copied[sop]) == original.read_instance(record)
        assert verify(copy).healthy
        assert {s["00100010"]["Value"][0]["Alphabetic"] for s in copy.find(
            "STUDY", Filter(())).matches} >= {f"Lê^Thị {n}" for n in range(6)}
        copy.ingest(make_instance())  # the restored index takes new rows (sequences moved on)
    finally:
        original.close()
        copy.close()


def test_delete_by_admin_api_and_cli_removes_rows_and_blobs_and_is_audited(
    empty_server: ServerProcess, tmp_path: Path
) -> None:
    by_api, by_cli = generate_uid(), generate_uid()
    paths = []
    for study in (by_api, by_api, by_cli):
        path = tmp_path / f"{generate_uid()}.dcm"
        path.write_bytes(make_instance(study_uid=study))
        paths.append(path)
    assert storescu(empty_server, *paths).returncode == 0
    response = httpx.delete(f"{empty_server.http_url}/admin/studies/{by_api}", timeout=30,
                            headers=empty_server.auth)
    assert response.status_code == 200, response.text
    assert response.json()["deleted_instances"] == 2
    gone = httpx.get(f"{empty_server.dicomweb_url}/studies/{by_api}", timeout=30,
                     headers=empty_server.auth)
    assert gone.status_code == 404
    assert httpx.delete(f"{empty_server.http_url}/admin/studies/{by_api}",
                        timeout=30, headers=empty_server.auth).status_code == 404
    assert httpx.delete(f"{empty_server.http_url}/admin/studies/1.2.x",
                        timeout=30, headers=empty_server.auth).status_code == 400

    settings = server_settings(empty_server)
    result = minipacs_cli(settings, "delete", by_cli)
    assert result.returncode == 0, result.stderr
    assert f"deleted study {by_cli}: 1 instances" in result.stdout
    missing = minipacs_cli(settings, "delete", by_cli)
    assert missing.returncode == 2 and by_cli in missing.stderr
    archive = open_test_archive(settings)
    try:
        assert archive.counts()["instances"] == 0
        assert list(archive.store.keys("studies/")) == []
        with archive.engine.connect() as connection:
            audited = connection.execute(
                select(AuditEvent.study_instance_uid, AuditEvent.actor)
                .where(AuditEvent.action == "delete")).all()
        by_actor = {row[0]: row[1] for row in audited}
        assert by_actor[by_api] == "token:tests-admin"  # the API token that deleted it
        assert by_actor[by_cli].startswith("system:cli-delete:")  # the operator
    finally:
        archive.close()
