"""Bounded memory with one big multi-frame instance, through every door.

A 256 MiB multi-frame CT goes in over C-STORE (pynetdicom and dcmtk storescu) and STOW-RS
(httpx, streamed), and out over WADO-RS (the instance, and three frames). For each door
the server's resident-memory high-water mark is reset first (/proc/PID/clear_refs), and
its growth must stay under a quarter of the instance: an implementation that held the
instance (or a frame list, or a response body) whole would need at least all of it.
bench/memory.py measures the same at 1 GiB (docs/performance.md "Bounded memory").
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from conftest import ServerProcess
from dimse_peers import storescu
from test_dimse_hostile import MiB

ROWS = COLUMNS = 512
FRAME_BYTES = ROWS * COLUMNS * 2
FRAMES = 512  # 256 MiB of pixel data
PEAK_BOUND = FRAMES * FRAME_BYTES // 4  # growth allowed per door: a quarter of it


def frame_bytes(number: int) -> bytes:
    """Frame `number` (from 1): every pixel holds the value `number` (< 2**BitsStored)."""
    return struct.pack("<H", number) * (ROWS * COLUMNS)


def write_big_instance(path: Path) -> Dataset:
    """The instance, written in pieces (header by pydicom, then Pixel Data's element
    header with its exact length, then the frames): never whole in this process."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        generate_uid(), generate_uid(), generate_uid())
    ds.PatientID = "BIG-1"
    ds.PatientName = "Lê^Thị Lớn"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality = "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLUMNS, FRAMES
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    with path.open("ab") as out:
        # (7FE0,0010) OW, explicit VR little endian (PS3.5 §7.1.2)
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, FRAMES * FRAME_BYTES))
        for number in range(FRAMES):
            out.write(frame_bytes(number + 1))
    return ds


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    path = tmp_path_factory.mktemp("big") / "big.dcm"
    return path, write_big_instance(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, big: tuple[Path, Dataset]
           ) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("server") / "data", ["--no-load-samples"])
    proc.data_dir.mkdir()
    proc.start()
    # Stored once up front, so that each door's test stands alone.
    done = storescu(proc, big[0], extra=("-xe",))
    assert done.returncode == 0, done.stdout + done.stderr
    yield proc
    proc.stop()


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def peak_growth(server: ServerProcess, door: Callable[[], None]) -> int:
    """Bytes the server's resident memory peaked above where it was before `door`."""
    assert server.process is not None
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    before = status_kib(pid, "VmRSS")
    door()
    return (status_kib(pid, "VmHWM") - before) * 1024


def instance_path(ds: Dataset) -> str:
    return (f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def test_cstore_from_pynetdicom(server: ServerProcess, big: tuple[Path, Dataset]) -> None:
    def door() -> None:
        ae = AE(ae_title="BIGSCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
        assert assoc.is_established
        status = assoc.send_c_store(big[0])  # a path: pynetdicom streams the file
        assoc.release()
        assert int(status.Status) == 0x0000

    grown = peak_growth(server, door)
    assert grown < PEAK_BOUND, f"C-STORE (pynetdicom): +{grown / MiB:.0f} MiB"


def test_cstore_from_storescu(server: ServerProcess, big: tuple[Path, Dataset]) -> None:
    def door() -> None:
        done = storescu(server, big[0], extra=("-xe",))
        assert done.returncode == 0, done.stdout + done.stderr

    grown = peak_growth(server, door)
    assert grown < PEAK_BOUND, f"C-STORE (storescu): +{grown / MiB:.0f} MiB"


def test_stow_streamed(server: ServerProcess, big: tuple[Path, Dataset]) -> None:
    boundary = "big-instance"

    def body() -> Iterator[bytes]:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with big[0].open("rb") as fh:
            while chunk := fh.read(4 * MiB):
                yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    def door() -> None:
        answer = server.http.post("/dicom-web/studies", content=body(), timeout=120,
                                  headers={"Content-Type": "multipart/related; "
                                           f'type="application/dicom"; boundary={boundary}',
                                           "Accept": "application/dicom+json"})
        assert answer.status_code == 200, answer.text[:500]
        assert "00081199" in answer.json()  # Referenced SOP Sequence: stored

    grown = peak_growth(server, door)
    assert grown < PEAK_BOUND, f"STOW-RS: +{grown / MiB:.0f} MiB"


def test_wado_instance(server: ServerProcess, big: tuple[Path, Dataset]) -> None:
    size = big[0].stat().st_size

    def door() -> None:
        received = 0
        with server.http.stream("GET", instance_path(big[1]), timeout=120, headers={
                "Accept": 'multipart/related; type="application/dicom"'}) as answer:
            assert answer.status_code == 200
            for chunk in answer.iter_raw(4 * MiB):
                received += len(chunk)
        assert received > size - 128  # the Part-10 file, in a multipart envelope

    grown = peak_growth(server, door)
    assert grown < PEAK_BOUND, f"WADO-RS instance: +{grown / MiB:.0f} MiB"


def test_wado_frames(server: ServerProcess, big: tuple[Path, Dataset]) -> None:
    numbers = [1, FRAMES // 2 + 1, FRAMES]

    def door() -> None:
        answer = server.http.get(
            f"{instance_path(big[1])}/frames/{','.join(map(str, numbers))}", timeout=120,
            headers={"Accept": 'multipart/related; type="application/octet-stream"'})
        assert answer.status_code == 200, answer.text[:300]
        for number in numbers:
            assert frame_bytes(number) in answer.content, f"frame {number}"

    grown = peak_growth(server, door)
    assert grown < PEAK_BOUND, f"WADO-RS frames: +{grown / MiB:.0f} MiB"
