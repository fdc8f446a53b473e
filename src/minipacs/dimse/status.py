"""The one mapping from core errors to DIMSE statuses (PS3.4 Annex B, C, PS3.7 Annex C)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from minipacs.errors import (
    Conflict,
    InvalidAttribute,
    InvalidInstance,
    MinipacsError,
    QueryError,
    StorageError,
)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700  # C-STORE: Refused, out of resources
STORE_DATASET_MISMATCH = 0xA900  # C-STORE: Error, data set does not match SOP class
STORE_CANNOT_UNDERSTAND = 0xC000  # C-STORE: Error, cannot understand
FIND_UNABLE_TO_PROCESS = 0xC000  # C-FIND: Failed, unable to process
FIND_IDENTIFIER_MISMATCH = 0xA900  # C-FIND: identifier does not match SOP class
FIND_OUT_OF_RESOURCES = 0xA700


def store_failure(exc: MinipacsError) -> Dataset:
    """Status dataset for a failed C-STORE, with the reason in ErrorComment (0000,0902).

    PS3.4 B.2.3: Cxxx "cannot understand" for bytes that cannot be parsed, which includes
    an instance not readable whole (`IncompleteInstance`: cut short, broken delimiters,
    not encoded as its transfer syntax says); A9xx "data set does not match SOP class"
    for one that parses but lacks what its class requires (`InvalidAttribute`: a UID, or
    an image's Pixel Data)."""
    if isinstance(exc, InvalidAttribute):
        code = STORE_DATASET_MISMATCH
    elif isinstance(exc, InvalidInstance | Conflict):
        code = STORE_CANNOT_UNDERSTAND
    elif isinstance(exc, StorageError):
        code = OUT_OF_RESOURCES
    else:
        code = STORE_CANNOT_UNDERSTAND
    return status_dataset(code, str(exc))


def find_failure(exc: MinipacsError) -> Dataset:
    code = FIND_IDENTIFIER_MISMATCH if isinstance(exc, QueryError) else FIND_UNABLE_TO_PROCESS
    if isinstance(exc, StorageError):
        code = FIND_OUT_OF_RESOURCES
    return status_dataset(code, str(exc))


def status_dataset(code: int, comment: str = "") -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        # ErrorComment is LO: at most 64 characters.
        status.ErrorComment = comment[:64]
    return status
