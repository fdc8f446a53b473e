"""Sequence matching inside the archive: the engine's semantics, paging and limits with
sequence keys, every level, rows indexed before sequences were kept (the 0003 migration,
`verify --rebuild-index`), on the run's backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, text, update

from backends import Backends
from conftest import open_test_archive
from factories import make_instance
from minipacs.archive import Archive
from minipacs.backup import backup, restore
from minipacs.config import Settings
from minipacs.dicom.item_matching import SequenceKey, dataset_matches, sequence_keys
from minipacs.dicom.json_model import tag_key
from minipacs.dicom.matching import Filter, Match, parse_match
from minipacs.errors import QueryError
from minipacs.index.database import create_index_engine
from minipacs.index.models import Patient, Series, Study
from minipacs.index.schema import upgrade
from minipacs.integrity import verify
from node_tools import minipacs_cli


def _key(path: str) -> str:
    return ".".join(tag_key(part) for part in path.split("."))


def _filter(**values: str) -> Filter:
    return Filter(tuple(parse_match(_key(k.replace("__", ".")), v) for k, v in values.items()))


def _uids(matches: list[dict[str, Any]]) -> list[str]:
    return [m["0020000D"]["Value"][0] for m in matches]


def _ref(uid: str, sop_class: str = "1.2.840.10008.3.1.2.3.1") -> dict[str, str]:
    return {"ReferencedSOPClassUID": sop_class, "ReferencedSOPInstanceUID": uid}


# ---------------------------------------------------------------------- the engine
def _sequence_key(**values: str) -> SequenceKey:
    (key,) = sequence_keys(_filter(**values).matches)
    return key


def _items(*items: dict[str, Any]) -> dict[str, Any]:
    return {"00081110": {"vr": "SQ", "Value": list(items)}}


def _json_ref(sop_class: str, uid: str) -> dict[str, Any]:
    return {
        "00081150": {"vr": "UI", "Value": [sop_class]},
        "00081155": {"vr": "UI", "Value": [uid]},
    }


def test_engine_needs_one_item_to_match_every_key_of_the_query_item() -> None:
    stored = _items(_json_ref("1.1", "9.1"), _json_ref("1.2", "9.2"))
    same = _sequence_key(
        ReferencedStudySequence__ReferencedSOPClassUID="1.2",
        ReferencedStudySequence__ReferencedSOPInstanceUID="9.2",
    )
    crossed = _sequence_key(
        ReferencedStudySequence__ReferencedSOPClassUID="1.1",
        ReferencedStudySequence__ReferencedSOPInstanceUID="9.2",
    )
    listed = _sequence_key(ReferencedStudySequence__ReferencedSOPInstanceUID="9.7\\9.1")
    assert dataset_matches(stored, same)
    assert not dataset_matches(stored, crossed)
    assert dataset_matches(stored, listed)
    assert not dataset_matches({}, same)
    assert not dataset_matches(_items({"00081150": {"vr": "UI"}}), same)  # empty value


def test_engine_matches_names_case_insensitively_and_nested_sequences() -> None:
    named = {
        "00400275": {
            "vr": "SQ",
            "Value": [
                {
                    "00321032": {"vr": "PN", "Value": [{"Alphabetic": "Lê^Văn Tám"}]},
                    "00400008": {
                        "vr": "SQ",
                        "Value": [
                            {
                                "00080100": {"vr": "SH", "Value": ["P1"]},
                                "00080102": {"vr": "SH", "Value": ["99LOCAL"]},
                            }
                        ],
                    },
                }
            ],
        }
    }
    by_name = _sequence_key(RequestAttributesSequence__RequestingPhysician="LÊ^VĂN*")
    assert dataset_matches(named, by_name)
    nested = Match(
        _key("RequestAttributesSequence.ScheduledProtocolCodeSequence.CodeValue"),
        "single",
        ("P1",),
        "SH",
    )
    other = Match(
        _key("RequestAttributesSequence.ScheduledProtocolCodeSequence.CodeValue"),
        "single",
        ("P2",),
        "SH",
    )
    assert dataset_matches(named, SequenceKey("00400275", (nested,)))
    assert not dataset_matches(named, SequenceKey("00400275", (other,)))


# ---------------------------------------------------------------------- archive
@pytest.fixture
def referencing(archive: Archive) -> tuple[str, list[str], str]:
    """Six studies of one patient, newest first in query order; the even ones reference
    the returned UID."""
    patient, referenced = "SQP-" + generate_uid()[-10:], generate_uid()
    studies = []
    for day in range(6, 0, -1):
        study = generate_uid()
        refs = [_ref(referenced)] if day % 2 == 0 else [_ref(generate_uid())]
        archive.ingest(
            make_instance(
                study_uid=study,
                patient_id=patient,
                study_date=f"2024010{day}",
                ReferencedStudySequence=refs,
            )
        )
        studies.append(study)
    return patient, studies, referenced


def test_offset_limit_and_truncation_count_only_matching_studies(
    archive: Archive, referencing: tuple[str, list[str], str]
) -> None:
    _patient, studies, referenced = referencing
    wanted = [studies[0], studies[2], studies[4]]  # days 6, 4, 2
    filt = _filter(ReferencedStudySequence__ReferencedSOPInstanceUID=referenced)
    assert _uids(archive.find("STUDY", filt).matches) == wanted
    page = archive.find("STUDY", filt, limit=1, offset=1)
    assert (_uids(page.matches), page.truncated) == ([wanted[1]], True)
    last = archive.find("STUDY", filt, limit=2, offset=2)
    assert (_uids(last.matches), last.truncated) == ([wanted[2]], False)
    archive.max_query_results = 2
    capped = archive.find("STUDY", filt)
    assert (_uids(capped.matches), capped.truncated) == (wanted[:2], True)


def test_sequence_keys_match_at_every_level(
    archive: Archive, referencing: tuple[str, list[str], str]
) -> None:
    patient, studies, referenced = referencing
    filt = _filter(ReferencedStudySequence__ReferencedSOPInstanceUID=referenced)
    (found,) = archive.find("PATIENT", filt).matches  # relational: one of its studies
    assert found["00100020"]["Value"] == [patient]
    series = archive.find("SERIES", filt).matches
    assert sorted(_uids(series)) == sorted([studies[0], studies[2], studies[4]])
    images = archive.find("IMAGE", filt, include=["00081110"]).matches
    assert len(images) == 3
    assert images[0]["00081110"]["Value"][0]["00081155"]["Value"] == [referenced]


def test_series_sequence_keys_match_patients_and_studies_relationally(archive: Archive) -> None:
    patient, study, step = (
        "SQS-" + generate_uid()[-10:],
        generate_uid(),
        "SPS-" + generate_uid()[-8:],
    )
    archive.ingest(
        make_instance(
            patient_id=patient,
            study_uid=study,
            RequestAttributesSequence=[
                {"ScheduledProcedureStepID": step, "RequestedProcedureID": "RP1"}
            ],
        )
    )
    archive.ingest(make_instance(patient_id=patient))  # another study, no request
    filt = _filter(
        RequestAttributesSequence__ScheduledProcedureStepID=step,
        RequestAttributesSequence__RequestedProcedureID="RP?",
    )
    (found,) = archive.find("PATIENT", filt).matches
    assert found["00100020"]["Value"] == [patient]
    assert _uids(archive.find("STUDY", filt).matches) == [study]
    other_request = _filter(
        RequestAttributesSequence__ScheduledProcedureStepID=step,
        RequestAttributesSequence__RequestedProcedureID="RP2",
    )
    assert archive.find("PATIENT", other_request).matches == []


def test_referenced_patient_sequence_is_kept_at_the_patient_level(archive: Archive) -> None:
    patient, reference = "SQR-" + generate_uid()[-10:], generate_uid()
    archive.ingest(
        make_instance(
            patient_id=patient,
            ReferencedPatientSequence=[_ref(reference, "1.2.840.10008.3.1.2.1.1")],
        )
    )
    filt = _filter(ReferencedPatientSequence__ReferencedSOPInstanceUID=reference)
    (found,) = archive.find("PATIENT", filt, include=["00081120"]).matches
    assert found["00100020"]["Value"] == [patient]
    assert found["00081120"]["Value"][0]["00081155"]["Value"] == [reference]
    assert len(archive.find("STUDY", filt).matches) == 1


def test_unsupported_and_malformed_sequence_keys_raise_query_error(archive: Archive) -> None:
    with pytest.raises(QueryError, match="ReferencedImageSequence"):
        archive.find("STUDY", _filter(ReferencedImageSequence__ReferencedSOPInstanceUID="1.2"))
    with pytest.raises(QueryError, match="ReferencedStudySequence"):
        archive.find("STUDY", Filter((Match("00081110", "single", ("x",), "SQ"),)))
    with pytest.raises(QueryError, match="not a number"):
        archive.find("STUDY", Filter((Match("00081110.00200013", "single", ("x",), "IS"),)))


# ---------------------------------------------------------------------- older rows
def _forget_sequences(archive: Archive) -> None:
    """Make every row look as if it was indexed before sequences were kept."""
    with archive.write_engine.begin() as connection:
        for table in (Patient, Study, Series):
            connection.execute(update(table).values(sequences_json=None))


def test_rows_indexed_before_sequences_were_kept_are_filled_by_rebuild_index(
    archive: Archive, settings: Settings
) -> None:
    study, referenced = generate_uid(), generate_uid()
    archive.ingest(
        make_instance(
            study_uid=study,
            ReferencedStudySequence=[_ref(referenced)],
            ProcedureCodeSequence=[
                {"CodeValue": "X1", "CodingSchemeDesignator": "99L", "CodeMeaning": "x"}
            ],
        )
    )
    filt = _filter(ReferencedStudySequence__ReferencedSOPInstanceUID=referenced)
    _forget_sequences(archive)
    assert archive.find("STUDY", filt).matches == []  # not derived yet: cannot match
    # ... but a return key still comes back, from the stored instance metadata.
    (old,) = archive.find("STUDY", _filter(StudyInstanceUID=study), include=["00081032"]).matches
    assert old["00081032"]["Value"][0]["00080100"]["Value"] == ["X1"]

    rebuilt = minipacs_cli(settings, "verify", "--rebuild-index")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "sequences re-derived for 3 rows" in rebuilt.stdout
    assert _uids(archive.find("STUDY", filt).matches) == [study]
    assert verify(archive, rebuild_index=True).healthy  # nothing left to change
    assert archive.refresh_sequences() == 0


def test_upgrade_to_0003_fills_sequences_of_rows_indexed_at_0002(settings: Settings) -> None:
    engine = create_index_engine(settings.index_url, writer=True)
    upgrade(engine, "0002")
    study, series, referenced = generate_uid(), generate_uid(), generate_uid()
    metadata = {
        "00081110": {"vr": "SQ", "Value": [_json_ref("1.2.3", referenced)]},
        "00400275": {"vr": "SQ", "Value": [{"00401001": {"vr": "SH", "Value": ["RP-OLD"]}}]},
    }
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO patients (id, patient_id, issuer_of_patient_id, patient_name, "
                "patient_name_lower, patient_name_folded, patient_birth_date, patient_sex, "
                "other_patient_ids) VALUES (1, 'OLD-1', '', '', '', '', '', '', '')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO studies (id, study_instance_uid, patient_pk, study_date, study_time, "
                "accession_number, study_id, study_description, referring_physician_name) "
                "VALUES (1, :uid, 1, '', '', '', '', '', '')"
            ),
            {"uid": study},
        )
        connection.execute(
            text(
                "INSERT INTO series (id, series_instance_uid, study_pk, modality, "
                "series_description, series_date, series_time, body_part_examined) "
                "VALUES (1, :uid, 1, 'CT', '', '', '', '')"
            ),
            {"uid": series},
        )
        connection.execute(
            text(
                "INSERT INTO instances (id, sop_instance_uid, series_pk, sop_class_uid, "
                "transfer_syntax_uid, blob_key, size, sha256, metadata_json, received_from) "
                "VALUES (1, :uid, 1, '1.2', '1.2.840.10008.1.2.1', 'k', 1, 'x', :meta, '')"
            ),
            {"uid": generate_uid(), "meta": json.dumps(metadata)},
        )
    upgrade(engine)
    with engine.connect() as connection:
        kept = dict(connection.execute(select(Study.id, Study.sequences_json)).all())
        series_kept = connection.execute(select(Series.sequences_json)).scalar_one()
        patient_kept = connection.execute(select(Patient.sequences_json)).scalar_one()
    engine.dispose()
    assert json.loads(kept[1]) == {"00081110": metadata["00081110"]}
    assert json.loads(series_kept) == {"00400275": metadata["00400275"]}
    assert json.loads(patient_kept) == {}
    archive = open_test_archive(settings)
    try:
        found = archive.find(
            "STUDY", _filter(ReferencedStudySequence__ReferencedSOPInstanceUID=referenced)
        )
        assert _uids(found.matches) == [study]
        found = archive.find(
            "STUDY", _filter(RequestAttributesSequence__RequestedProcedureID="RP-OLD")
        )
        assert _uids(found.matches) == [study]
    finally:
        archive.close()


def test_restoring_a_backup_made_before_sequences_were_kept_derives_them(
    archive: Archive, backends: Backends, tmp_path: Path
) -> None:
    study, referenced = generate_uid(), generate_uid()
    archive.ingest(make_instance(study_uid=study, ReferencedStudySequence=[_ref(referenced)]))
    backup(archive, tmp_path / "backup")
    for table in ("patients", "studies", "series"):  # as a 0002 backup has them
        path = tmp_path / "backup" / "index" / f"{table}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text(
            "".join(
                json.dumps({k: v for k, v in row.items() if k != "sequences_json"}) + "\n"
                for row in rows
            )
        )
    restored = open_test_archive(
        Settings(data_dir=tmp_path / "restored", load_samples=False, **backends.settings())
    )
    try:
        restore(restored, tmp_path / "backup")
        found = restored.find(
            "STUDY", _filter(ReferencedStudySequence__ReferencedSOPInstanceUID=referenced)
        )
        assert _uids(found.matches) == [study]
    finally:
        restored.close()


# ---------------------------------------------------------------------- other patient IDs
def _other_ids(archive: Archive, patient_id: str) -> list[tuple[str, str]]:
    (found,) = archive.find(
        "PATIENT", _filter(PatientID=patient_id), include=["00101002"]
    ).matches
    return [
        (item["00100020"]["Value"][0], item["00100021"]["Value"][0])
        for item in found["00101002"]["Value"]
    ]


def test_a_patient_gathers_other_ids_from_every_study_and_rebuild_agrees(
    archive: Archive,
) -> None:
    cccd = {"PatientID": "079204001234", "IssuerOfPatientID": "CCCD"}
    bhyt = {"PatientID": "DN4790123456789", "IssuerOfPatientID": "BHYT"}
    archive.ingest(make_instance(patient_id="P-OID", OtherPatientIDsSequence=[cccd]))
    archive.ingest(make_instance(patient_id="P-OID", OtherPatientIDsSequence=[bhyt, cccd]))
    archive.ingest(make_instance(patient_id="P-OID"))  # a modality that sends none
    assert _other_ids(archive, "P-OID") == [
        ("079204001234", "CCCD"),
        ("DN4790123456789", "BHYT"),
    ]
    filt = _filter(
        OtherPatientIDsSequence__PatientID="079204001234",
        OtherPatientIDsSequence__IssuerOfPatientID="CCCD",
    )
    assert len(archive.find("STUDY", filt).matches) == 3
    crossed = _filter(
        OtherPatientIDsSequence__PatientID="079204001234",
        OtherPatientIDsSequence__IssuerOfPatientID="BHYT",
    )
    assert archive.find("STUDY", crossed).matches == []
    # What ingest gathered is what re-deriving from the stored metadata gives.
    assert archive.refresh_sequences() == 0
    _forget_sequences(archive)
    assert archive.refresh_sequences() > 0
    assert _other_ids(archive, "P-OID") == [
        ("079204001234", "CCCD"),
        ("DN4790123456789", "BHYT"),
    ]


def test_upgrade_to_0004_gathers_other_ids_of_rows_kept_at_0003(
    archive: Archive, settings: Settings
) -> None:
    cccd = {"PatientID": "001099008877", "IssuerOfPatientID": "CCCD"}
    bhyt = {"PatientID": "HC4010011223344", "IssuerOfPatientID": "BHYT"}
    archive.ingest(make_instance(patient_id="P-0003", OtherPatientIDsSequence=[cccd]))
    archive.ingest(make_instance(patient_id="P-0003", OtherPatientIDsSequence=[bhyt]))
    # As revision 0003 left such a patient: sequences kept, OtherPatientIDsSequence not.
    with archive.write_engine.begin() as connection:
        connection.execute(update(Patient).values(sequences_json="{}"))
        connection.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    filt = _filter(
        OtherPatientIDsSequence__PatientID="HC4010011223344",
        OtherPatientIDsSequence__IssuerOfPatientID="BHYT",
    )
    assert archive.find("STUDY", filt).matches == []
    engine = create_index_engine(settings.index_url, writer=True)
    try:
        upgrade(engine, "0004")  # the later revisions' tables are there already
    finally:
        engine.dispose()
    assert len(archive.find("STUDY", filt).matches) == 2
    assert _other_ids(archive, "P-0003") == [
        ("001099008877", "CCCD"),
        ("HC4010011223344", "BHYT"),
    ]
    assert archive.refresh_sequences() == 0  # the migration derived what ingest would
