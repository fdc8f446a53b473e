"""Read an instance's header from Part-10 bytes and pull out what the index needs."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ImplicitVRLittleEndian

from minipacs.dicom.names import fold_text, lower_name
from minipacs.dicom.raw_json import BULK_PREFIX, header_json
from minipacs.dicom.uids import require_uid
from minipacs.errors import InvalidInstance

log = logging.getLogger(__name__)

PREAMBLE_LEN = 128
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class InstanceAttributes:
    """The attributes that get index columns, read once at ingest.

    Strings are decoded text (pydicom applies SpecificCharacterSet); absent values are "".
    """

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    other_patient_ids: tuple[str, ...] = ()
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician_name: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    series_date: str = ""
    series_time: str = ""
    body_part_examined: str = ""
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    number_of_frames: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def patient_name_lower(self) -> str:
        return lower_name(self.patient_name)

    @property
    def patient_name_folded(self) -> str:
        return fold_text(self.patient_name)

    @property
    def has_pixels(self) -> bool:
        return bool(self.rows and self.columns)


@dataclass(frozen=True)
class ParsedInstance:
    """A received instance: its header dataset, index attributes, hash and size.

    `part10` is set when the input lacked a Part-10 header and we had to add file meta:
    then those are the bytes to store; otherwise the input is stored as it came.
    `model` is the header's DICOM JSON as read (`json_model.instance_json` completes it).
    """

    dataset: Dataset
    attributes: InstanceAttributes
    sha256: str
    size: int
    part10: bytes | None = None
    model: dict[str, Any] = field(default_factory=dict, compare=False)


def _text(model: dict[str, Any], key: str) -> str:
    """An attribute's value as text, as pydicom's `str()` of it gives: one value
    stripped, several joined by backslashes, a person name's groups joined by '='."""
    attribute = model.get(key)
    values = attribute.get("Value") if attribute else None
    if not values:
        return ""
    texts = ["=".join(v.values()) if isinstance(v, dict) else str(v) for v in values
             if v is not None]
    return texts[0].strip() if len(values) == 1 and texts else "\\".join(texts)


def _int(model: dict[str, Any], key: str) -> int | None:
    attribute = model.get(key)
    values = attribute.get("Value") if attribute else None
    if not values or len(values) != 1:
        return None
    try:
        return int(values[0])
    except (TypeError, ValueError):
        return None


def _other_patient_ids(model: dict[str, Any]) -> tuple[str, ...]:
    ids: list[str] = []
    for item in (model.get("00101002") or {}).get("Value") or []:  # OtherPatientIDsSequence
        pid = _text(item, "00100020") if isinstance(item, dict) else ""
        if pid:
            ids.append(pid)
    # (0010,1000) OtherPatientIDs is retired but still sent by older systems.
    legacy = (model.get("00101000") or {}).get("Value") or []
    ids.extend(str(v).strip() for v in legacy if v is not None and str(v).strip())
    return tuple(dict.fromkeys(ids))


def attributes_of(ds: Dataset, transfer_syntax_uid: str
                  ) -> tuple[InstanceAttributes, dict[str, Any]]:
    """Index attributes and DICOM JSON (PS3.18 F, pixel data left out) of a header
    dataset; raises `InvalidInstance` on missing/bad UIDs. Both come from one walk of
    the raw elements (`raw_json`), not from pydicom's converted values."""
    meta = getattr(ds, "file_meta", None)
    sop_uid = require_uid(
        ds.get("SOPInstanceUID") or (meta and meta.get("MediaStorageSOPInstanceUID")),
        "SOPInstanceUID (0008,0018)",
    )
    sop_class = require_uid(
        ds.get("SOPClassUID") or (meta and meta.get("MediaStorageSOPClassUID")),
        "SOPClassUID (0008,0016)",
    )
    series_uid = require_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID (0020,000E)")
    study_uid = require_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID (0020,000D)")
    base = f"{BULK_PREFIX}studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    model = header_json(ds, lambda tag: f"{base}/bulkdata/{tag:08X}")
    attributes = InstanceAttributes(
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        series_instance_uid=series_uid,
        study_instance_uid=study_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        patient_id=_text(model, "00100020"),
        issuer_of_patient_id=_text(model, "00100021"),
        patient_name=_text(model, "00100010"),
        patient_birth_date=_text(model, "00100030"),
        patient_sex=_text(model, "00100040"),
        other_patient_ids=_other_patient_ids(model),
        study_date=_text(model, "00080020"),
        study_time=_text(model, "00080030"),
        accession_number=_text(model, "00080050"),
        study_id=_text(model, "00200010"),
        study_description=_text(model, "00081030"),
        referring_physician_name=_text(model, "00080090"),
        modality=_text(model, "00080060"),
        series_number=_int(model, "00200011"),
        series_description=_text(model, "0008103E"),
        series_date=_text(model, "00080021"),
        series_time=_text(model, "00080031"),
        body_part_examined=_text(model, "00180015"),
        instance_number=_int(model, "00200013"),
        rows=_int(model, "00280010"),
        columns=_int(model, "00280011"),
        bits_allocated=_int(model, "00280100"),
        number_of_frames=_int(model, "00280008"),
    )
    return attributes, model


def _sha256_of(source: bytes | Path) -> tuple[str, int]:
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(source).hexdigest(), len(source)
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _has_part10_header(head: bytes) -> bool:
    return len(head) >= PREAMBLE_LEN + 4 and head[PREAMBLE_LEN : PREAMBLE_LEN + 4] == b"DICM"


def _wrap_raw_dataset(raw: bytes, ds: Dataset) -> bytes:
    """Prefix a bare dataset (no preamble/meta, as some old systems write) with Part-10 meta.

    The dataset bytes themselves are kept exactly; only the 128-byte preamble, 'DICM' and
    the file meta group are added, so WADO-RS can serve a proper Part-10 file.
    """
    ts = UID(ImplicitVRLittleEndian if ds.is_implicit_VR else "1.2.840.10008.1.2.1")
    if not ds.is_little_endian:
        ts = UID("1.2.840.10008.1.2.2")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = io.BytesIO()
    buffer.write(b"\0" * PREAMBLE_LEN + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buffer.getvalue() + raw


def parse_instance(source: bytes | Path) -> ParsedInstance:
    """Parse the header of a DICOM instance given as bytes or a file path.

    Raises `InvalidInstance` with the reason when it is not DICOM, or lacks the UIDs the
    archive keys on. Pixel data is never decoded here.
    """
    if isinstance(source, Path):
        with open(source, "rb") as fh:
            head = fh.read(PREAMBLE_LEN + 4)
    else:
        head = bytes(source[: PREAMBLE_LEN + 4])
    part10 = _has_part10_header(head)
    try:
        stream: Any = source if isinstance(source, Path) else io.BytesIO(source)
        ds = pydicom.dcmread(stream, stop_before_pixels=True, force=not part10)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InvalidInstance(f"not a readable DICOM instance: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on garbage; all mean "not DICOM"
        raise InvalidInstance(
            f"not a readable DICOM instance: {type(exc).__name__}: {exc}"
        ) from exc
    if not part10 and (len(ds) == 0 or "SOPInstanceUID" not in ds):
        raise InvalidInstance("not DICOM: no Part-10 header ('DICM' at byte 128) and no dataset")
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    wrapped: bytes | None = None
    if not part10:
        raw = source.read_bytes() if isinstance(source, Path) else bytes(source)
        try:
            wrapped = _wrap_raw_dataset(raw, ds)
        except (AttributeError, ValueError) as exc:
            raise InvalidInstance(f"bare dataset without SOP UIDs cannot be stored: {exc}") from exc
        ts = str(ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in ds.file_meta else ts
        ts = ts or ("1.2.840.10008.1.2" if ds.is_implicit_VR else "1.2.840.10008.1.2.1")
    if not ts:
        raise InvalidInstance("file meta has no TransferSyntaxUID (0002,0010)")
    attributes, model = attributes_of(ds, require_uid(ts, "TransferSyntaxUID (0002,0010)"))
    sha, size = _sha256_of(wrapped if wrapped is not None else source)
    return ParsedInstance(ds, attributes, sha, size, wrapped, model)
