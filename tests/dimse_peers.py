"""Small wrappers around real DIMSE peers (dcmtk binaries, pynetdicom) for tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from conftest import ServerProcess, require_tool


def run_dcmtk(tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool(tool), *args], capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def storescu(server: ServerProcess, *files: Path, extra: tuple[str, ...] = ()
             ) -> subprocess.CompletedProcess[str]:
    return run_dcmtk("storescu", "-aec", server.ae_title, *extra, "127.0.0.1",
                     str(server.dicom_port), *map(str, files))


def dataset_bytes(part10: bytes) -> bytes:
    """The data set of a Part-10 file, without preamble and file meta group."""
    assert part10[128:132] == b"DICM"
    # (0002,0000) UL FileMetaInformationGroupLength is the first element: 12 bytes.
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length:]


def c_find(server: ServerProcess, identifier: Dataset, model: str = "S",
           calling: str = "TESTFIND") -> list[Dataset]:
    """All pending identifiers of one C-FIND with pynetdicom; asserts final success."""
    sop_class = (StudyRootQueryRetrieveInformationModelFind if model == "S"
                 else PatientRootQueryRetrieveInformationModelFind)
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established, "association refused"
    results: list[Dataset] = []
    final = None
    try:
        for status, ds in assoc.send_c_find(identifier, sop_class):
            if status and status.Status in (0xFF00, 0xFF01):
                results.append(ds)
            else:
                final = status
    finally:
        assoc.release()
    assert final is not None and final.Status == 0x0000, f"C-FIND failed: {final}"
    return results
