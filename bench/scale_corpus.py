"""A synthetic hospital of N instances, indexed through the real ingest code, for the scale
benchmark (`bench/scale.py`).

Each instance is a small Part-10 image (32x32 pixels: ingest refuses an image without
them, and query benchmarks need no large ones); no blobs are written. The first instance
of every series goes through what ingest does with an arriving instance's index rows:
`parse_instance` (the header parse), `derive` (its DICOM JSON and sequences),
`instance_key`, `indexed_rows` and `insert_new_instance` (the Core statements of
`Archive._record_instance`), which write the patient, study and series rows, normalised
columns included (the lower-cased and the accent-free name, the "|"-delimited CCCD and
BHYT numbers). The series' other instances differ from it only in SOP Instance UID and
InstanceNumber (same-length values patched into the bytes), so their instance rows are
the first one's with those values, the blob key, size and SHA-256 replaced
(`sibling_row`), inserted many per statement: ~10 ms per instance through the ingest
code would make a million take hours. `tests/test_scale_fill.py` compares the rows with
`Archive.ingest`'s of the same bytes, column by column, and the fill itself re-checks
one instance in `check_every` series. `exact=True` puts every instance through the
ingest code. Not written: blobs, the `store` audit events and the change feed (rows in
tables no query here reads), order links.

The hospital: patients with generated Vietnamese names (ISO_IR 192) and a CCCD (12
digits) and a BHYT card number in OtherPatientIDsSequence; 1-6 studies each, spread over
years 2016-2025 with an accession number; studies of 1 to 300 instances by modality
(CR/DX 1-4, MG 4, US 5-40, MR 3-6 series of 20-50, CT 1-2 series of 40-300).
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import Engine, Table, insert, select
from sqlalchemy.orm import Session

from minipacs.dicom.header import parse_instance
from minipacs.index.models import Instance
from minipacs.index.upsert import derive, indexed_rows, insert_new_instance
from minipacs.storage.keys import instance_key

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
          "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý", "Trương", "Đinh", "Lâm", "Mai"]
# Vietnamese surnames are few and very unequal: Nguyễn alone is ~38 %.
FAMILY_WEIGHTS = [38, 11, 9.5, 7, 5, 4, 4.5, 3.9, 3.5, 2.1, 2, 1.4, 1.3, 1.3, 1, 0.5, 1,
                  0.8, 0.8, 0.7]
MIDDLE = ["Văn", "Thị", "Hữu", "Đức", "Minh", "Thanh", "Ngọc", "Quang", "Xuân", "Thu",
          "Hoài", "Quốc", "Kim", "Bảo", "Gia"]
GIVEN = ["An", "Bình", "Châu", "Dũng", "Hằng", "Huy", "Lan", "Long", "Mai", "Nghĩa",
         "Phương", "Quý", "Thảo", "Tuấn", "Vân", "Yến", "Hải", "Hạnh", "Hương", "Khánh",
         "Linh", "Nam", "Nga", "Phúc", "Quân", "Sơn", "Tâm", "Trang", "Việt", "Đạt",
         "Thắng", "Hiếu", "Nhung", "Oanh", "Loan", "Cường", "Hùng", "Tùng", "Uyên", "Ánh"]
PROVINCES = ["001", "079", "031", "048", "092", "026", "036", "038", "040", "075"]
SOP_CLASS = {  # modality -> SOP Class UID (pydicom.uid names)
    "CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1", "MG": "1.2.840.10008.5.1.4.1.1.1.2",
}
# (modality, weight, series count range, instances per series range, body part)
STUDY_KINDS = [
    ("CR", 40, (1, 2), (1, 2), "CHEST"), ("DX", 14, (1, 2), (1, 2), "HAND"),
    ("US", 16, (1, 1), (5, 40), "ABDOMEN"), ("MG", 5, (1, 1), (4, 4), "BREAST"),
    ("MR", 9, (3, 6), (20, 50), "BRAIN"), ("CT", 16, (1, 2), (40, 100), "CHEST"),
]
ISSUER = "BV_CHO_RAY"
RECEIVED_FROM = "SCALE_BENCH"


@dataclass(frozen=True)
class PatientSpec:
    patient_id: str
    name: str
    birth_date: str
    sex: str
    cccd: str
    bhyt: str


@dataclass(frozen=True)
class SeriesSpec:
    uid: str
    number: int
    modality: str
    count: int
    body_part: str


@dataclass(frozen=True)
class StudySpec:
    patient: PatientSpec
    uid: str
    date: str
    time: str
    accession: str
    description: str
    series: tuple[SeriesSpec, ...]

    @property
    def instance_count(self) -> int:
        return sum(s.count for s in self.series)


def _uid(rng: random.Random) -> str:
    # 2.25 + a 128-bit integer (PS3.5 §B.2), drawn from the seeded generator.
    return f"2.25.{rng.getrandbits(128)}"


def _patient(rng: random.Random, number: int) -> PatientSpec:
    family = rng.choices(FAMILY, FAMILY_WEIGHTS)[0]
    sex = rng.choice("MF")
    middle = "Thị" if sex == "F" and rng.random() < 0.6 else rng.choice(MIDDLE)
    given = rng.choice(GIVEN)
    year = rng.randint(1935, 2020)
    province = rng.choice(PROVINCES)
    century_sex = (0 if year < 2000 else 2) + (1 if sex == "F" else 0)
    cccd = f"{province}{century_sex}{year % 100:02d}{rng.randrange(10**6):06d}"
    bhyt = f"{rng.choice(['DN', 'HC', 'GD', 'HT', 'TE'])}{rng.randint(1, 5)}" \
           f"{province[1:]}{rng.randrange(10**10):010d}"
    return PatientSpec(
        patient_id=f"BN{number:08d}", name=f"{family}^{middle} {given}",
        birth_date=f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}", sex=sex,
        cccd=cccd, bhyt=bhyt)


def studies(total: int, seed: int) -> Iterator[StudySpec]:
    """Studies holding `total` instances in all (the last one cut to fit), seeded."""
    rng = random.Random(seed)
    kinds = [k[:1] + k[2:] for k in STUDY_KINDS]
    weights = [k[1] for k in STUDY_KINDS]
    left, patients, accession = total, 0, 0
    while left > 0:
        patients += 1
        patient = _patient(rng, patients)
        for _ in range(rng.choice([1, 1, 1, 1, 2, 2, 3, 4, 6])):
            if left <= 0:
                break
            modality, series_range, per_series, body_part = rng.choices(kinds, weights)[0]
            series: list[SeriesSpec] = []
            for number in range(1, rng.randint(*series_range) + 1):
                low, high = per_series
                count = rng.randint(low, high)
                if modality == "CT" and rng.random() < 0.3:
                    count = rng.randint(150, 300)  # thin-slice reconstructions
                count = min(count, left - sum(s.count for s in series),
                            300 - sum(s.count for s in series))
                if count <= 0:
                    break
                series.append(SeriesSpec(_uid(rng), number, modality, count, body_part))
            accession += 1
            day = rng.randrange(3650)  # 2016-01-01 + up to ten years
            year, day_of_year = 2016 + day // 365, day % 365
            study = StudySpec(
                patient=patient, uid=_uid(rng),
                date=f"{year}{1 + day_of_year // 31 % 12:02d}{1 + day_of_year % 28:02d}",
                time=f"{rng.randint(6, 21):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}",
                accession=f"{year % 100:02d}{accession:08d}",
                description=f"{modality} {body_part.lower()}", series=tuple(series))
            left -= study.instance_count
            yield study


def series_template(study: StudySpec, series: SeriesSpec) -> bytes:
    """The Part-10 image every instance of `series` shares, with
    InstanceNumber 9999 and SOP Instance UID `<series UID>.9999` as placeholders."""
    p = study.patient
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = SOP_CLASS[series.modality], f"{series.uid}.9999"
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = p.name, p.patient_id, ISSUER
    ds.PatientBirthDate, ds.PatientSex = p.birth_date, p.sex
    cccd, bhyt = Dataset(), Dataset()
    cccd.PatientID, cccd.IssuerOfPatientID, cccd.TypeOfPatientID = p.cccd, "CCCD", "TEXT"
    bhyt.PatientID, bhyt.IssuerOfPatientID, bhyt.TypeOfPatientID = p.bhyt, "BHYT", "TEXT"
    ds.OtherPatientIDsSequence = [cccd, bhyt]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.uid, series.uid
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = study.date, study.time, study.accession
    ds.StudyID, ds.StudyDescription = study.accession[-6:], study.description
    ds.ReferringPhysicianName = "Trần^Văn Bác Sĩ"
    ds.Modality, ds.SeriesNumber = series.modality, series.number
    ds.BodyPartExamined = series.body_part
    ds.SeriesDate, ds.SeriesTime = study.date, study.time
    ds.SeriesDescription = f"{series.modality} {series.number}"
    ds.InstanceNumber = 9999
    # Small pixels (ingest refuses an image without them; blobs are not written here).
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(32 * 32 * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


# InstanceNumber (0020,0013), IS, 4 bytes, in explicit VR little endian.
_NUMBER_ELEMENT = b"\x20\x00\x13\x00IS\x04\x00"


def sop_instance_uid(series: SeriesSpec, number: int) -> str:
    return f"{series.uid}.{1000 + number}"  # 1001..1300: as long as the placeholder


def instance_part10(template: bytes, series: SeriesSpec, number: int) -> bytes:
    """Instance `number` (1-300) of the series: its template with the placeholders
    replaced by values of the same length (so every length in the file stays right)."""
    placeholder = f"{series.uid}.9999".encode()
    patched = template.replace(placeholder, sop_instance_uid(series, number).encode())
    patched = patched.replace(_NUMBER_ELEMENT + b"9999",
                              _NUMBER_ELEMENT + f"{number:<4d}".encode())
    if template.count(placeholder) != 2 or len(patched) != len(template):
        raise AssertionError(f"series {series.uid}: template placeholders not found")
    return patched


def instances(total: int, seed: int) -> Iterator[bytes]:
    """Part-10 headers of the `total` instances of `studies(total, seed)`, in order."""
    for study in studies(total, seed):
        for series in study.series:
            template = series_template(study, series)
            for number in range(1, series.count + 1):
                yield instance_part10(template, series, number)


def index_instance(session: Session, part10: bytes) -> dict[str, Any]:
    """The index rows ingest writes for one new instance (see the module docstring).
    Returns the instance row's values."""
    parsed = parse_instance(part10)
    a = parsed.attributes
    key = instance_key(a.study_instance_uid, a.series_instance_uid, a.sop_instance_uid)
    rows = indexed_rows(session, a)
    if rows.indexed_as(parsed.sha256, key) != "new":
        raise ValueError(f"SOP Instance {a.sop_instance_uid} is already indexed: fill an "
                         "empty index (or one filled with another --seed)")
    derived = derive(parsed)
    if not insert_new_instance(session, parsed, key, derived, RECEIVED_FROM, rows):
        raise ValueError(f"patient {a.patient_id} is reconciled: the bulk path writes new "
                         "patients only")
    return dict(session.execute(select(_INSTANCE).where(
        _INSTANCE.c.sop_instance_uid == a.sop_instance_uid)).mappings().one())


_INSTANCE = cast(Table, Instance.__table__)
# The instance columns insert_new_instance sets (the others are the primary key and
# server defaults).
_ROW_COLUMNS = ("sop_instance_uid", "series_pk", "sop_class_uid", "instance_number",
                "transfer_syntax_uid", "rows", "columns", "bits_allocated",
                "number_of_frames", "blob_key", "size", "sha256", "metadata_json",
                "received_from")


def _json_number(number: int) -> str:
    return f'"00200013":{{"vr":"IS","Value":[{number}]}}'


def sibling_row(first: dict[str, Any], series: SeriesSpec, number: int,
                part10: bytes) -> dict[str, Any]:
    """The instance row ingest would write for instance `number` of a series whose
    instance 1 was indexed as `first`: the same row but for the SOP Instance UID, the
    InstanceNumber, the blob key, size and SHA-256 (and the same two values in the
    DICOM JSON)."""
    uid_1, uid = sop_instance_uid(series, 1), sop_instance_uid(series, number)
    metadata = first["metadata_json"]
    if metadata.count(f'"{uid_1}"') != 1 or metadata.count(_json_number(1)) != 1:
        raise AssertionError(f"series {series.uid}: instance 1's DICOM JSON has not "
                             "exactly one SOPInstanceUID and InstanceNumber")
    # The UID is also in BulkDataURIs (".../instances/<uid>/bulkdata/...").
    uid_pattern = re.compile(re.escape(uid_1) + r"(?![0-9])")
    row = {name: first[name] for name in _ROW_COLUMNS}
    row.update(
        sop_instance_uid=uid, instance_number=number,
        blob_key=first["blob_key"].replace(f"/{uid_1}.dcm", f"/{uid}.dcm"),
        size=len(part10), sha256=hashlib.sha256(part10).hexdigest(),
        metadata_json=uid_pattern.sub(uid, metadata)
        .replace(_json_number(1), _json_number(number)))
    return row


def fill(engine: Engine, total: int, seed: int, *, exact: bool = False, batch: int = 5000,
         check_every: int = 200,
         progress: Callable[[int], None] = lambda done: None) -> int:
    """Index the `total` instances of the seeded hospital into `engine`'s index (at the
    newest schema revision), about `batch` per transaction. Returns how many were written.

    `exact`: every instance through `index_instance` (the ingest code; ~10 ms each).
    Otherwise instance 1 of each series goes through it (writing the patient, study and
    series rows as ingest does) and the series' other instances are inserted as
    `sibling_row`s, many per statement; every `check_every`-th series, its last instance
    is indexed through the ingest code instead and its row compared with the
    sibling row (AssertionError if they differ)."""
    done = pending_count = series_done = 0
    pending: list[dict[str, Any]] = []
    session = Session(engine)
    try:
        for study in studies(total, seed):
            for series in study.series:
                template = series_template(study, series)
                first = index_instance(session, instance_part10(template, series, 1))
                for number in range(2, series.count + 1):
                    part10 = instance_part10(template, series, number)
                    if exact:
                        index_instance(session, part10)
                    else:
                        pending.append(sibling_row(first, series, number, part10))
                series_done += 1
                if not exact and series.count > 1 and series_done % check_every == 0:
                    _check_sibling(session, pending.pop(), part10)
                done += series.count
                pending_count += series.count
                if pending_count >= batch:
                    _flush(session, pending)
                    session.commit()
                    pending_count = 0
                    progress(done)
        _flush(session, pending)
        session.commit()
        progress(done)
    finally:
        session.close()
    return done


def _flush(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(_INSTANCE), rows)
        rows.clear()


def _check_sibling(session: Session, row: dict[str, Any], part10: bytes) -> None:
    """Index the instance through the ingest code instead, and compare with `row`."""
    indexed = index_instance(session, part10)
    differ = [name for name in _ROW_COLUMNS if indexed[name] != row[name]]
    if differ:
        raise AssertionError(f"{row['sop_instance_uid']}: the bulk row differs from "
                             f"ingest's in {differ}")
