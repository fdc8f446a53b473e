"""Small HTTP helpers for DICOMweb tests: STOW raw Part-10 bytes, split multipart replies."""

from __future__ import annotations

import io
from dataclasses import dataclass

import httpx
from pydicom import Dataset, dcmread

from conftest import ServerProcess


@dataclass(frozen=True)
class Stored:
    """One instance as sent: its Part-10 bytes and UIDs, and its URL path below /dicom-web."""

    data: bytes
    study: str
    series: str
    sop: str

    @property
    def path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    def dataset(self) -> Dataset:
        return dcmread(io.BytesIO(self.data))


def stow(server: ServerProcess, *instances: bytes, study: str | None = None,
         boundary: str = "test-boundary-1") -> httpx.Response:
    """POST instances as one multipart/related STOW-RS request, bytes exactly as given."""
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
        for data in instances
    ) + f"--{boundary}--\r\n".encode()
    url = server.dicomweb_url + "/studies" + (f"/{study}" if study else "")
    return httpx.post(url, content=body, timeout=60, headers={
        **server.auth,
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    })


def store(server: ServerProcess, *instances: bytes) -> list[Stored]:
    response = stow(server, *instances)
    assert response.status_code == 200, response.text
    out = []
    for data in instances:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        out.append(Stored(data, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    return out


def multipart_parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """(headers with lower-case names, body) of each part of a multipart/related response,
    split as RFC 2046 §5.1.1 says (a delimiter is CRLF, "--", boundary)."""
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = next(p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";")
                    if p.strip().lower().startswith("boundary="))
    body = b"\r\n" + response.content
    chunks = body.split(b"\r\n--" + boundary.encode())
    assert chunks[-1].startswith(b"--"), "no closing delimiter"
    parts = []
    for chunk in chunks[1:-1]:
        chunk = chunk[chunk.index(b"\r\n") + 2:]
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, data))
    return parts
