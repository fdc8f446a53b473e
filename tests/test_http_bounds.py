"""What one HTTP request may cost: frame lists and header blocks are capped with a
clear 400/431, transcoded retrieves and frame lists are streamed (server peak memory
measured from /proc/<pid>/status)."""

from __future__ import annotations

import io
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
)

from conftest import ServerProcess
from dicomweb_peers import multipart_parts, store
from factories import make_instance
from minipacs.dicom.transcode import transcode, transcode_stream

pytestmark = pytest.mark.door_only  # runs in the embedded pass only (conftest.py)

DICOM_EXPLICIT = ('multipart/related; type="application/dicom"; '
                  f"transfer-syntax={ExplicitVRLittleEndian}")


def _instance_url(server: ServerProcess, data: bytes) -> str:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/"
            f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")


def _peak_kib(server: ServerProcess) -> int:
    """The server process's resident-memory high-water mark (VmHWM), in KiB."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


# ---------------------------------------------------------------------- transcoding
@pytest.mark.parametrize("source", [RLELossless, JPEG2000Lossless, JPEGLosslessSV1,
                                    ImplicitVRLittleEndian, ExplicitVRLittleEndian],
                         ids=lambda ts: ts.name)
@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                         ids=lambda ts: ts.name)
def test_streamed_transcode_gives_the_pixels_and_header_of_the_whole_transcode(
    source: str, target: str
) -> None:
    original = make_instance(transfer_syntax=source, frames=3, rows=32, columns=48)
    stream = transcode_stream(io.BytesIO(original), target)
    streamed = b"".join(stream.chunks)
    assert len(streamed) == stream.length
    whole = dcmread(io.BytesIO(transcode(original, target)))
    out = dcmread(io.BytesIO(streamed))
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == whole.SOPInstanceUID
    assert out.PhotometricInterpretation == whole.PhotometricInterpretation
    assert np.array_equal(out.pixel_array, whole.pixel_array)


def test_streamed_transcode_of_colour_jpeg_source_says_rgb_interleaved() -> None:
    original = make_instance(modality="US", transfer_syntax=RLELossless, frames=2)
    out = dcmread(io.BytesIO(b"".join(
        transcode_stream(io.BytesIO(original), ExplicitVRLittleEndian).chunks)))
    reference = dcmread(io.BytesIO(original))
    assert out.SamplesPerPixel == 3 and out.PlanarConfiguration == 0
    assert np.array_equal(out.pixel_array, reference.pixel_array)


# ---------------------------------------------------------------------- frame lists
def test_frame_list_naming_a_frame_twice_is_400_naming_it(server: ServerProcess) -> None:
    data = make_instance(frames=3)
    store(server, data)
    response = httpx.get(_instance_url(server, data) + "/frames/1,2,1", timeout=30,
                         headers=server.auth)
    assert response.status_code == 400
    assert "frame 1 twice" in response.json()["error"]


def test_frame_list_longer_than_the_cap_is_400_before_any_work(server: ServerProcess) -> None:
    data = make_instance(frames=2)
    store(server, data)
    frames = ",".join(str(n) for n in range(1, 2050))  # default cap 2048
    response = httpx.get(_instance_url(server, data) + f"/frames/{frames}", timeout=30,
                         headers=server.auth)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "2049 frames" in error and "2048" in error


def test_repeated_frame_url_from_the_issue_is_refused_not_decoded_2000_times(
    server: ServerProcess,
) -> None:
    data = make_instance(frames=1)
    store(server, data)
    response = httpx.get(_instance_url(server, data) + "/frames/" + ",".join(["1"] * 2000),
                         timeout=30, headers=server.auth)
    assert response.status_code == 400
    assert "names frame 1 twice" in response.json()["error"]


# ---------------------------------------------------------------------- header block
def _raw_request(port: int, head: bytes, limit: int = 1 << 16) -> bytes:
    """Send `head` (may be large) and read the answer; the server may close early."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed before reading everything: fine
        answer = b""
        while len(answer) < limit:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    return answer


def test_one_megabyte_header_block_is_431_and_the_server_keeps_serving(
    server: ServerProcess,
) -> None:
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    head = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + filler * 1024 + b"\r\n")
    answer = _raw_request(server.http_port, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"MINIPACS_HTTP_MAX_HEADER_BYTES" in answer
    assert httpx.get(server.http_url + "/healthz", timeout=10,
                     headers=server.auth).status_code == 200


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-One: " + b"v" * (1 << 20) + b"\r\n\r\n",
    b"GET /dicom-web/studies?PatientID=" + b"1" * (1 << 20) + b" HTTP/1.1\r\n\r\n",
], ids=["one-1MB-header-value", "1MB-url"])
def test_one_huge_header_value_or_url_is_431(server: ServerProcess, head: bytes) -> None:
    answer = _raw_request(server.http_port, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert httpx.get(server.http_url + "/healthz", timeout=10,
                     headers=server.auth).status_code == 200


def test_header_block_under_the_limit_is_served(server: ServerProcess) -> None:
    response = httpx.get(server.http_url + "/healthz", timeout=10,
                         headers={**server.auth, "X-Filler": "a" * 30_000})
    assert response.status_code == 200


# ---------------------------------------------------------------------- peak memory
FRAMES, ROWS, COLUMNS = 160, 512, 512  # 80 MiB of 16-bit pixels once decompressed


def _big_rle_instance() -> bytes:
    """A 160-frame 512x512 16-bit CT, RLE Lossless, every pixel 0: 1.3 MiB stored, 80 MiB
    decoded. Small when stored, so the measure is what decoding costs on every blob
    store (an S3 blob is read whole into memory when opened; see docs/conformance.md)."""
    # PS3.5 Annex G: a 64-byte header (segment count, offsets), then one PackBits segment
    # per byte plane; 0x81 followed by a byte repeats that byte 128 times.
    segment = b"\x81\x00" * (ROWS * COLUMNS // 128)
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    frame = header + segment + segment
    return make_instance(transfer_syntax=RLELossless, rows=ROWS, columns=COLUMNS,
                         frames=FRAMES, encapsulated_frames=[frame] * FRAMES)


def test_transcoded_retrieve_and_frame_list_peak_stays_near_one_frame(
    empty_server: ServerProcess,
) -> None:
    data = _big_rle_instance()
    store(empty_server, data)
    url = _instance_url(empty_server, data)
    decoded_size = FRAMES * ROWS * COLUMNS * 2
    # Warm up: first decode loads codecs and numpy paths; measure growth after that.
    warm = httpx.get(url + "/frames/1", timeout=60, headers=empty_server.auth)
    assert warm.status_code == 200
    before = _peak_kib(empty_server)

    with httpx.stream("GET", url, headers={**empty_server.auth, "Accept": DICOM_EXPLICIT},
                      timeout=120) as answer:
        assert answer.status_code == 200
        received = sum(len(chunk) for chunk in answer.iter_bytes())
    assert received > decoded_size
    after_retrieve = _peak_kib(empty_server)

    frames = ",".join(str(n) for n in range(1, FRAMES + 1))
    with httpx.stream("GET", f"{url}/frames/{frames}", timeout=120,
                      headers=empty_server.auth) as answer:
        assert answer.status_code == 200
        received = sum(len(chunk) for chunk in answer.iter_bytes())
    assert received > decoded_size
    after_frames = _peak_kib(empty_server)

    growth_retrieve = (after_retrieve - before) * 1024
    growth_frames = (after_frames - after_retrieve) * 1024
    print(f"decoded {decoded_size >> 20} MiB; peak growth: transcoded retrieve "
          f"{growth_retrieve >> 20} MiB, frame list {growth_frames >> 20} MiB")
    # Whole-instance work would hold the decoded instance at least once (80 MiB); a
    # streamed request holds a few frames (0.5 MiB each) plus buffers.
    assert growth_retrieve < decoded_size // 4
    assert growth_frames < decoded_size // 4


def test_transcoded_retrieve_is_a_valid_instance(server: ServerProcess) -> None:
    data = make_instance(transfer_syntax=RLELossless, frames=3)
    store(server, data)
    response = httpx.get(_instance_url(server, data),
                         headers={**server.auth, "Accept": DICOM_EXPLICIT},
                         timeout=30)
    assert response.status_code == 200
    (headers, body), = multipart_parts(response)
    assert int(headers["content-length"]) == len(body)
    out = dcmread(io.BytesIO(body))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(out.pixel_array, dcmread(io.BytesIO(data)).pixel_array)


# ---------------------------------------------------------------------- JSON bodies
def test_admin_body_over_the_limit_is_413_before_it_is_read(empty_server: ServerProcess) -> None:
    big = b'{"host": "' + b"h" * (2 * 1024 * 1024) + b'", "port": 104}'
    response = httpx.put(f"{empty_server.http_url}/admin/ae/BIG", content=big,
                         headers={**empty_server.auth, "Content-Type": "application/json"},
                         timeout=30)
    assert response.status_code == 413
    assert "MINIPACS_HTTP_MAX_JSON_BODY_BYTES" in response.json()["error"]
    assert httpx.get(f"{empty_server.http_url}/admin/ae", timeout=10,
                     headers=empty_server.auth).json() == []


def test_chunked_admin_body_over_the_limit_is_413(empty_server: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"host": "'
        for _ in range(40):  # 40 x 64 KiB = 2.5 MiB, no Content-Length
            yield b"h" * 65536
        yield b'", "port": 104}'

    response = httpx.put(f"{empty_server.http_url}/admin/ae/BIG", content=chunks(),
                         headers={**empty_server.auth, "Content-Type": "application/json"},
                         timeout=30)
    assert response.status_code == 413
    assert "at least" in response.json()["error"]
    assert httpx.get(f"{empty_server.http_url}/admin/ae", timeout=10,
                     headers=empty_server.auth).json() == []


def test_admin_body_under_the_limit_is_accepted(empty_server: ServerProcess) -> None:
    response = httpx.put(f"{empty_server.http_url}/admin/ae/SMALL",
                         json={"host": "127.0.0.1", "port": 104, "description": "d" * 10_000},
                         timeout=10, headers=empty_server.auth)
    assert response.status_code == 200, response.text


def test_valid_json_padded_past_the_limit_is_413_and_not_applied(
    empty_server: ServerProcess,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"host": "127.0.0.1", "port": 104}'
        for _ in range(40):  # 2.5 MiB of whitespace: valid JSON, over the limit
            yield b" " * 65536

    response = httpx.put(f"{empty_server.http_url}/admin/ae/PADDED", content=chunks(),
                         headers={**empty_server.auth, "Content-Type": "application/json"},
                         timeout=30)
    assert response.status_code == 413
    assert httpx.get(f"{empty_server.http_url}/admin/ae", timeout=10,
                     headers=empty_server.auth).json() == []
