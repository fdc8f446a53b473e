"""An instance is acknowledged only when it can be read back whole (issue #10).

Files are cut at every offset (preamble, file meta, each element boundary, inside values,
mid Pixel Data, mid fragment, before the sequence delimiter, inside a deflate stream)
and sent through the archive, C-STORE (pynetdicom sending the file's own bytes, dcmtk
storescu), STOW-RS and folder import. Every cut is refused, nothing is kept, and the
server keeps serving. Temp files and STOW-RS spools of killed writes are swept.
"""

from __future__ import annotations

import errno
import io
import os
import re
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from backends import Backends
from conftest import ServerProcess, open_test_archive
from dicomweb_peers import stow
from dimse_peers import dataset_bytes, run_dcmtk
from factories import make_instance
from minipacs.archive import Archive, IngestResult
from minipacs.config import Settings
from minipacs.dicom.completeness import check_complete
from minipacs.dicom.header import parse_instance
from minipacs.errors import IncompleteInstance, InvalidAttribute, InvalidInstance
from minipacs.folder_import import import_files
from minipacs.index.upsert import derive
from minipacs.integrity import verify
from minipacs.storage import FilesystemStore, instance_key
from minipacs.storage.scratch import hold, stow_spool
from node_tools import minipacs_cli

CUT_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                DeflatedExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit)


def _instance(transfer_syntax: str = ExplicitVRLittleEndian, **kwargs: object) -> bytes:
    """A small CT with a sequence (items and delimiters) besides the pixels."""
    values: dict[str, object] = {"rows": 16, "columns": 16,
                                 "OtherPatientIDsSequence": [{"PatientID": "OLD-1"}],
                                 **kwargs}
    return make_instance(transfer_syntax=transfer_syntax, **values)  # type: ignore[arg-type]


def _whole_length(data: bytes, transfer_syntax: str) -> int:
    """Shortest prefix still whole: all of it, except the NUL a deflated data set may
    carry after the end of its deflate stream (PS3.5 §A.5), found with zlib itself."""
    if transfer_syntax != DeflatedExplicitVRLittleEndian:
        return len(data)
    start = 144 + int.from_bytes(data[140:144], "little")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflater.decompress(data[start:])
    assert inflater.eof
    return len(data) - len(inflater.unused_data)


def _pixel_data_start(data: bytes) -> int:
    """Offset of the top-level (7FE0,0010) element header (little endian files)."""
    return data.rindex(b"\xe0\x7f\x10\x00")


# ------------------------------------------------------------------ the archive itself
@pytest.mark.parametrize("transfer_syntax", CUT_SYNTAXES, ids=lambda ts: ts.name)
def test_every_cut_of_an_instance_is_refused_and_nothing_is_kept(
    archive: Archive, transfer_syntax: str
) -> None:
    data = _instance(transfer_syntax, frames=2)
    whole = _whole_length(data, transfer_syntax)
    accepted = []
    for cut in range(whole):
        try:
            archive.ingest(data[:cut])
        except InvalidInstance:
            continue
        accepted.append(cut)
    assert accepted == []
    assert archive.counts()["instances"] == 0
    assert list(archive.store.keys()) == []
    assert archive.ingest(data[:whole]).status == "stored"  # and the whole one is taken


def test_cuts_given_as_files_are_refused_like_bytes(archive: Archive, tmp_path: Path) -> None:
    data = _instance(RLELossless, frames=3)
    path = tmp_path / "cut.dcm"
    for cut in range(0, len(data), 37):
        path.write_bytes(data[:cut])
        with pytest.raises(InvalidInstance):
            archive.ingest(path)
    assert archive.counts()["instances"] == 0


def test_pixel_data_cut_says_which_element_declared_what_and_what_came(archive: Archive
                                                                       ) -> None:
    data = make_instance(rows=128, columns=128)  # 128 * 128 * 2 = 32768 bytes of pixels
    with pytest.raises(IncompleteInstance,
                       match=r"^Pixel Data \(7FE0,0010\) declares 32768 bytes, 25768 received "
                       r"\(element at byte \d+\)$"):
        archive.ingest(data[:-7000])


def test_encapsulated_cuts_name_the_fragment_or_the_missing_delimiter(archive: Archive
                                                                      ) -> None:
    data = _instance(RLELossless, frames=2)
    with pytest.raises(IncompleteInstance, match=r"Sequence Delimitation Item \(FFFE,E0DD\)"):
        archive.ingest(data[:-8])
    with pytest.raises(IncompleteInstance, match=r"Pixel Data \(7FE0,0010\) fragment 2 "
                       r"declares \d+ bytes, \d+ received"):
        archive.ingest(data[:-20])


def test_cut_inside_a_deflate_stream_is_refused(archive: Archive) -> None:
    data = _instance(DeflatedExplicitVRLittleEndian)
    with pytest.raises(IncompleteInstance, match="deflate"):
        archive.ingest(data[: len(data) - 40])


def test_cut_just_before_the_pixel_data_is_an_image_without_pixels(archive: Archive) -> None:
    data = _instance()
    with pytest.raises(InvalidAttribute, match=r"Pixel Data \(7FE0,0010\) is missing from "
                       "this CT Image Storage"):
        archive.ingest(data[:_pixel_data_start(data)])


def _with_transfer_syntax(data: bytes, claimed: str) -> bytes:
    """The data set of `data` behind a file meta claiming another transfer syntax."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = dcmread(io.BytesIO(data)).SOPInstanceUID
    meta.TransferSyntaxUID = claimed
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta)  # type: ignore[arg-type]
    return buffer.getvalue() + dataset_bytes(data)


@pytest.mark.parametrize(("encoded", "claimed", "message"), [
    (ExplicitVRLittleEndian, ImplicitVRLittleEndian,
     "encoded as Explicit VR Little Endian, but TransferSyntaxUID"),
    (ImplicitVRLittleEndian, ExplicitVRLittleEndian,
     "encoded as Implicit VR Little Endian, but TransferSyntaxUID"),
    (ExplicitVRLittleEndian, ExplicitVRBigEndian,
     "encoded as Explicit VR Little Endian, but TransferSyntaxUID"),
    (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
     "encoded as Explicit VR Little Endian, but TransferSyntaxUID"),
    (ExplicitVRLittleEndian, RLELossless, "native .* but the transfer syntax is an "
     "encapsulated one"),
])
def test_data_set_not_encoded_as_its_file_meta_says_is_refused(
    archive: Archive, encoded: str, claimed: str, message: str
) -> None:
    mismatched = _with_transfer_syntax(_instance(encoded), claimed)
    with pytest.raises(IncompleteInstance, match=message):
        archive.ingest(mismatched)
    assert archive.counts()["instances"] == 0


def test_a_large_file_is_walked_without_being_read(tmp_path: Path) -> None:
    """A 2 GB multi-frame instance on disk (sparse): the check seeks over its pixels."""
    data = make_instance(rows=512, columns=512, frames=1)
    header_end = _pixel_data_start(data) + 12  # (7FE0,0010) OW: tag, VR, 2 reserved, length
    pixel_bytes = 4096 * 512 * 512
    header = bytearray(data[:header_end])
    header[-4:] = pixel_bytes.to_bytes(4, "little")
    path = tmp_path / "big.dcm"
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + pixel_bytes)
    tracemalloc.start()
    try:
        check_complete(path)
        with open(path, "r+b") as fh:
            fh.truncate(len(header) + pixel_bytes - 2)
        with pytest.raises(IncompleteInstance, match=f"declares {pixel_bytes} bytes, "
                           f"{pixel_bytes - 2} received"):
            check_complete(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_a_run_of_zeros_where_elements_should_be_is_refused_at_once(tmp_path: Path) -> None:
    """1 GB of zeros after an implicit VR file meta reads as (0000,0000) of length 0,
    over and over: refused at the repeat, not walked 8 bytes at a time."""
    data = _instance(ImplicitVRLittleEndian)
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    path = tmp_path / "zeros.dcm"
    with open(path, "wb") as fh:
        fh.write(data[:meta_end])
        fh.truncate(meta_end + 1024**3)
    started = time.monotonic()
    with pytest.raises(IncompleteInstance, match="repeated or out of order"):
        check_complete(path)
    assert time.monotonic() - started < 5


def test_import_reports_cut_files_and_stores_the_rest(archive: Archive, tmp_path: Path
                                                      ) -> None:
    good = _instance()
    cut = _instance(RLELossless, frames=2)
    (tmp_path / "good.dcm").write_bytes(good)
    (tmp_path / "cut.dcm").write_bytes(cut[:-100])
    summary = import_files(archive, sorted(tmp_path.glob("*.dcm")))
    assert summary.stored == 1
    ((path, why),) = summary.rejected
    assert path.name == "cut.dcm" and "Pixel Data (7FE0,0010)" in why


def test_import_command_names_each_cut_file_and_exits_1(settings: Settings, tmp_path: Path
                                                        ) -> None:
    folder = tmp_path / "cd"
    folder.mkdir()
    (folder / "good.dcm").write_bytes(_instance())
    (folder / "cut.dcm").write_bytes(_instance(rows=64, columns=64)[:-1000])
    result = minipacs_cli(settings, "import", str(folder))
    assert result.returncode == 1, result.stderr
    assert re.search(r"rejected .*cut\.dcm: Pixel Data \(7FE0,0010\) declares 8192 bytes, "
                     r"7192 received", result.stdout), result.stdout


# ------------------------------------------------------------------ C-STORE
def _cuts(data: bytes) -> dict[str, bytes]:
    """Cuts a sender can still frame (file meta intact), named for the failure messages."""
    pixels = _pixel_data_start(data)
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    return {
        "inside the header": data[: meta_end + 150],
        "at the Pixel Data element": data[:pixels],
        "inside the Pixel Data header": data[: pixels + 6],
        "mid pixel data": data[: (pixels + len(data)) // 2],
        "one byte short": data[:-1],
    }


CUT_NAMES = ("inside the header", "at the Pixel Data element", "inside the Pixel Data header",
             "mid pixel data", "one byte short")


def _ct(server_sop: str, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    return _instance(transfer_syntax, sop_uid=server_sop, frames=2, patient_id="CUT-DIMSE")


def _qido_instance(server: ServerProcess, sop: str) -> list[object]:
    response = httpx.get(f"{server.dicomweb_url}/instances", params={"SOPInstanceUID": sop},
                         headers=server.auth)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, RLELossless],
                         ids=lambda ts: ts.name)
def test_cstore_of_cut_files_is_refused_and_the_association_keeps_serving(
    server: ServerProcess, tmp_path: Path, transfer_syntax: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pynetdicom sends a file path's bytes as they are (no decode/re-encode) only with
    # this switch; otherwise it reads the file with pydicom and encodes it anew.
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="TESTCUTS")
    ae.add_requested_context(CTImageStorage, [transfer_syntax])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    refused: dict[str, tuple[int, str, str]] = {}
    try:
        for name in CUT_NAMES:
            sop = generate_uid()
            path = tmp_path / f"{sop}.dcm"
            path.write_bytes(_cuts(_ct(sop, transfer_syntax))[name])
            status = assoc.send_c_store(path)  # the file's own bytes, not re-encoded
            refused[name] = (status.Status, str(status.get("ErrorComment", "")), sop)
        good = tmp_path / "good.dcm"
        good_sop = generate_uid()
        good.write_bytes(_ct(good_sop, transfer_syntax))
        assert assoc.send_c_store(good).Status == 0x0000
    finally:
        assoc.release()
    # PS3.4 B.2.3: a data set that cannot be parsed is 0xC000 (cannot understand); an
    # image that parses but lacks its Pixel Data is 0xA900 (does not match SOP class).
    expected = dict.fromkeys(refused, 49152)
    expected["at the Pixel Data element"] = 0xA900
    assert {name: status for name, (status, _, _) in refused.items()} == expected
    comment = refused["mid pixel data"][1]
    if transfer_syntax == ExplicitVRLittleEndian:
        assert re.match(r"Pixel Data \(7FE0,0010\) declares \d+ bytes, \d+ received", comment)
    else:
        assert comment.startswith("Pixel Data (7FE0,0010) fragment")
    for _status, _comment, sop in refused.values():
        assert _qido_instance(server, sop) == []
    assert len(_qido_instance(server, good_sop)) == 1


def test_storescu_cut_files_are_never_acknowledged(server: ServerProcess, tmp_path: Path
                                                   ) -> None:
    """dcmtk sends what it can parse; what it cannot (a file cut inside a value) it
    refuses to send itself ("premature end of stream"). Neither is ever stored."""
    sops: dict[str, str] = {}
    files = []
    for name in CUT_NAMES:
        sop = generate_uid()
        sops[name] = sop
        path = tmp_path / f"{len(files)}.dcm"
        path.write_bytes(_cuts(_ct(sop))[name])
        files.append(path)
    good_sop = generate_uid()
    (tmp_path / "good.dcm").write_bytes(_ct(good_sop))
    result = run_dcmtk("storescu", "-v", "--no-halt", "-aec", server.ae_title, "127.0.0.1",
                       str(server.dicom_port), *map(str, files), str(tmp_path / "good.dcm"))
    output = result.stdout + result.stderr
    for sop in sops.values():
        assert _qido_instance(server, sop) == []
    assert len(_qido_instance(server, good_sop)) == 1
    # Per file, what happened: dcmtk 3.6.7 refuses to send a file cut inside a value
    # ("premature end of stream"); the well-formed cut (ends just before Pixel Data)
    # it sends, and we refuse it.
    outcome = {}
    for section in output.split("Sending file: ")[1:]:
        path, _, rest = section.partition("\n")
        response = re.search(r"Received Store Response \((.*)\)", rest)
        outcome[Path(path).name] = response.group(1) if response else "not sent by dcmtk"
    names = {f"{i}.dcm": name for i, name in enumerate(CUT_NAMES)}
    by_cut = {names[file]: result for file, result in outcome.items() if file in names}
    assert by_cut["at the Pixel Data element"] == "Error: DataSetDoesNotMatchSOPClass"
    assert all(result in ("not sent by dcmtk", "Error: DataSetDoesNotMatchSOPClass")
               or result.startswith("Error: CannotUnderstand") for result in by_cut.values())
    assert len(by_cut) == len(CUT_NAMES) and outcome["good.dcm"] == "Success"


# ------------------------------------------------------------------ STOW-RS
def test_stow_lists_each_cut_part_in_failed_sop_sequence(server: ServerProcess) -> None:
    study = generate_uid()
    good = _instance(study_uid=study)
    cut_sops = [generate_uid() for _ in range(3)]
    pixels_cut = _instance(study_uid=study, sop_uid=cut_sops[0], rows=64, columns=64)[:-500]
    fragment_cut = _instance(RLELossless, study_uid=study, sop_uid=cut_sops[1])[:-30]
    boundary = _instance(study_uid=study, sop_uid=cut_sops[2])
    boundary_cut = boundary[:_pixel_data_start(boundary)]
    response = stow(server, pixels_cut, good, fragment_cut, boundary_cut)
    assert response.status_code == 202  # PS3.18 §10.5.3: some stored, some failed
    failed = response.json()["00081198"]["Value"]
    assert [(item["00081155"]["Value"][0], item["00081197"]["Value"][0]) for item in failed] \
        == [(cut_sops[0], 0xC000), (cut_sops[1], 0xC000), (cut_sops[2], 0xA900)]
    for sop in cut_sops:
        assert _qido_instance(server, sop) == []

    none_stored = stow(server, pixels_cut, fragment_cut)
    assert none_stored.status_code == 409
    assert len(none_stored.json()["00081198"]["Value"]) == 2


# ------------------------------------------------------------------ verify
def test_verify_reports_instances_stored_cut_short_by_older_versions(archive: Archive) -> None:
    whole = archive.ingest(_instance())
    cut = _instance(frames=2)[:-300]
    # What an older version did: store and index the cut bytes without checking them.
    parsed = parse_instance(cut)
    a = parsed.attributes
    key = instance_key(a.study_instance_uid, a.series_instance_uid, a.sop_instance_uid)
    archive.store.put(key, cut)
    archive._index_instance(parsed, key, derive(parsed), "an older minipacs")
    report = verify(archive)
    assert report.checked == 2 and report.corrupt == [] and report.missing == []
    ((bad_key, why),) = report.incomplete
    assert bad_key == key and why.startswith("Pixel Data (7FE0,0010) declares")
    assert not report.healthy
    assert archive.instances(sop_instance_uid=whole.sop_instance_uid)


def test_rebuild_does_not_index_an_orphan_blob_that_is_not_whole(archive: Archive) -> None:
    cut = _instance(frames=2)[:-300]
    a = parse_instance(cut).attributes
    key = instance_key(a.study_instance_uid, a.series_instance_uid, a.sop_instance_uid)
    archive.store.put(key, cut)  # written before a crash, never acknowledged
    report = verify(archive, rebuild_index=True)
    assert report.orphans == [key] and report.reindexed == []
    ((unreadable, why),) = report.unreadable
    assert unreadable == key and why.startswith("Pixel Data (7FE0,0010) declares")
    assert archive.counts()["instances"] == 0


# ------------------------------------------------------------------ leftovers
def _local_store(archive: Archive) -> FilesystemStore:
    """The folder the archive writes blobs through: the blob folder or the S3 spool."""
    store = archive.store
    local = store if isinstance(store, FilesystemStore) else getattr(store, "spool", None)
    assert isinstance(local, FilesystemStore), f"no local folder behind {store!r}"
    return local


def test_temp_files_of_killed_writes_are_swept_at_start_never_listed(settings: Settings
                                                                     ) -> None:
    archive = open_test_archive(settings)
    try:
        local = _local_store(archive)
        stored = archive.ingest(_instance())
        leftover = local.incoming / f"{stored.sop_instance_uid}.dcm.{'a' * 32}.tmp"
        leftover.write_bytes(_instance()[:3000])  # a writer killed mid-write
        legacy = local.root / "studies" / f".{stored.sop_instance_uid}.dcm.{'b' * 32}.tmp"
        legacy.parent.mkdir(parents=True, exist_ok=True)
        legacy.write_bytes(_instance()[:3000])  # where older versions wrote them
        busy = local.incoming / f"busy.dcm.{'c' * 32}.tmp"
        with open(busy, "wb") as writer:  # a live writer (another worker) holds its file
            hold(writer)
            writer.write(b"in flight")
            writer.flush()
            assert not any(k.endswith(".tmp") for k in archive.store.keys())
            archive.close()
            archive = open_test_archive(settings)  # a node starting
            assert not leftover.exists()
            assert busy.exists() and legacy.exists()  # held; not in the start-up sweep
            report = verify(archive)
            assert report.temp_removed == 1 and not legacy.exists() and busy.exists()
        assert verify(archive).temp_removed == 1 and not busy.exists()  # writer gone
        assert report.healthy
    finally:
        archive.close()


def _dicom_body(boundary: str, data: bytes) -> Iterator[bytes]:
    yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data


def test_stow_spool_of_a_killed_server_is_swept_at_the_next_start(
    tmp_path: Path, backends: Backends
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    proc = ServerProcess(data_dir, ["--no-load-samples", *backends.server_args()]).start()
    spool = stow_spool(data_dir)
    boundary = "cut-by-kill"
    first_half = _instance(rows=256, columns=256)
    first_half = first_half[: len(first_half) // 2]

    def body() -> Iterator[bytes]:
        yield from _dicom_body(boundary, first_half)
        # Once the server is spooling this part to disk, kill it: mid request.
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > 0 for p in spool.glob("*/part-*")):
            assert time.monotonic() < deadline, "the server never spooled the part"
            time.sleep(0.01)  # polling a condition, with a deadline
        proc.stop(kill=True)
        yield b""

    try:
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{proc.dicomweb_url}/studies", content=body(), timeout=30,
                       headers={**proc.auth,
                                "Content-Type": f'multipart/related; type="application/dicom"; '
                                                f'boundary={boundary}'})
        left = list(spool.glob("*/part-*"))
        assert left and left[0].read_bytes()[128:132] == b"DICM"  # patient data, left over
        proc.start()
        assert list(spool.iterdir()) == []
        assert stow(proc, _instance()).status_code == 200  # and STOW-RS works on
        assert list(spool.iterdir()) == []
    finally:
        proc.stop()


def _key(stored: IngestResult) -> str:
    return instance_key(stored.study_instance_uid, stored.series_instance_uid,
                        stored.sop_instance_uid)


def test_a_spool_file_handed_over_is_stored_and_may_then_be_removed(
        settings: Settings, tmp_path: Path) -> None:
    """`ingest(path, take=True)` (C-STORE's spooled dataset): the store may keep the file
    itself; the caller then removes its own name, and the instance reads back whole."""
    archive = open_test_archive(settings)
    try:
        data = _instance()
        spooled = tmp_path / "spooled.dcm"
        spooled.write_bytes(data)
        key = _key(archive.ingest(spooled, take=True))
        spooled.unlink()  # pynetdicom removes its spool file once answered
        assert archive.store.read(key) == data
        assert verify(archive).healthy
    finally:
        archive.close()


def test_a_file_handed_over_becomes_the_blob_by_a_hard_link(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "blobs")
    data = _instance()
    spooled = tmp_path / "spooled.dcm"
    spooled.write_bytes(data)
    store.put("studies/1.2/series/1.3/1.4.dcm", spooled, take=True)
    blob = store.root / "studies/1.2/series/1.3/1.4.dcm"
    assert blob.stat().st_ino == spooled.stat().st_ino  # the same file, fsynced, linked
    spooled.unlink()
    assert store.read("studies/1.2/series/1.3/1.4.dcm") == data


def test_a_handed_over_file_replacing_a_blob_or_on_another_device_is_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FilesystemStore(tmp_path / "blobs")
    key = "studies/1.2/series/1.3/1.4.dcm"
    first, again = tmp_path / "first.dcm", tmp_path / "again.dcm"
    first.write_bytes(_instance())
    again.write_bytes(data := _instance())
    store.put(key, first, take=True)
    store.put(key, again, take=True)  # the name exists: swapped atomically, a copy
    assert (store.root / key).stat().st_ino not in (first.stat().st_ino,
                                                    again.stat().st_ino)
    assert store.read(key) == data

    def cross_device(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)  # blobs on another file system
    store.delete(key)
    store.put(key, again, take=True)
    assert (store.root / key).stat().st_ino != again.stat().st_ino
    assert store.read(key) == data
