"""The archive service on a real SQLite index and a real blob folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from conftest import open_test_archive
from factories import make_instance
from minipacs.archive import Archive
from minipacs.config import Settings
from minipacs.dicom.matching import Filter, parse_match
from minipacs.errors import Conflict, InvalidAttribute, InvalidInstance, NotFound


def _filter(**values: str) -> Filter:
    from minipacs.dicom.json_model import tag_key

    fuzzy = values.pop("fuzzy", "") == "true"
    return Filter(
        tuple(parse_match(tag_key(k), v, fuzzy=fuzzy, list_sep=",") for k, v in values.items()),
        fuzzy=fuzzy,
    )


def _uids(result_matches: list[dict], key: str = "0020000D") -> list[str]:
    return [m[key]["Value"][0] for m in result_matches]


def test_ingest_stores_bytes_exactly_and_indexes_them(archive: Archive) -> None:
    data = make_instance()
    result = archive.ingest(data, received_from="test")
    assert result.status == "stored"
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    (record,) = archive.instances(sop_instance_uid=result.sop_instance_uid)
    assert archive.read_instance(record) == data
    assert archive.counts()["instances"] == 1


def test_same_instance_twice_is_a_duplicate_not_a_second_copy(archive: Archive) -> None:
    data = make_instance()
    archive.ingest(data)
    assert archive.ingest(data).status == "duplicate"
    assert archive.counts()["instances"] == 1


def test_same_uid_other_bytes_replaces_by_default_and_is_audited(archive: Archive) -> None:
    sop = generate_uid()
    first = make_instance(sop_uid=sop, StudyDescription="first")
    second = make_instance(sop_uid=sop, StudyDescription="second")
    archive.ingest(first)
    assert archive.ingest(second).status == "replaced"
    (record,) = archive.instances(sop_instance_uid=sop)
    assert archive.read_instance(record) == second
    # the old study (other UID) lost its only instance: its rows and blob are gone
    assert archive.counts() == {"patients": 1, "studies": 1, "series": 1, "instances": 1}
    assert len(list(archive.store.keys())) == 1


def test_reject_policy_refuses_changed_duplicate(settings: Settings) -> None:
    archive = open_test_archive(settings.model_copy(update={"duplicate_policy": "reject"}))
    sop = generate_uid()
    archive.ingest(make_instance(sop_uid=sop, StudyDescription="a"))
    with pytest.raises(Conflict, match=sop):
        archive.ingest(make_instance(sop_uid=sop, StudyDescription="b"))


@pytest.mark.parametrize("missing", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_instance_without_a_uid_is_refused_and_nothing_is_stored(
    archive: Archive, missing: str, settings: Settings
) -> None:
    data = make_instance(**{missing: None, "MediaStorageSOPInstanceUID": None}
                         if missing == "SOPInstanceUID" else {missing: None})
    with pytest.raises(InvalidAttribute, match=missing):
        archive.ingest(data)
    assert archive.counts()["instances"] == 0
    assert list(archive.store.keys()) == []


def test_traversal_uid_never_becomes_a_path(archive: Archive, tmp_path: Path) -> None:
    data = make_instance(StudyInstanceUID="1.2.3/../../../../tmp/evil")
    with pytest.raises(InvalidAttribute, match="StudyInstanceUID"):
        archive.ingest(data)
    assert list(archive.store.keys()) == []


def test_garbage_is_invalid_instance(archive: Archive) -> None:
    with pytest.raises(InvalidInstance):
        archive.ingest(b"this is not DICOM at all" * 20)


def test_find_study_by_wildcard_case_insensitive_name(archive: Archive) -> None:
    study = generate_uid()
    archive.ingest(make_instance(study_uid=study, patient_name="Nguyễn^Văn An",
                                 patient_id="P-A"))
    archive.ingest(make_instance(patient_name="Trần^Thị Bích", patient_id="P-B"))
    assert _uids(archive.find("STUDY", _filter(PatientName="NGUYỄN*")).matches) == [study]
    assert _uids(archive.find("STUDY", _filter(PatientName="nguyen*")).matches) == []


@pytest.mark.parametrize("query", ["nguyen van an", "an", "NGUYEN", "van a*", "nguyễn"])
def test_fuzzy_name_matching_ignores_accents_and_matches_any_name_part(
    archive: Archive, query: str
) -> None:
    study = generate_uid()
    archive.ingest(make_instance(study_uid=study, patient_name="Nguyễn^Văn An"))
    archive.ingest(make_instance(patient_name="Phạm^Minh Tuấn", patient_id="P2"))
    found = archive.find("STUDY", _filter(PatientName=query, fuzzy="true")).matches
    assert _uids(found) == [study]


def test_fuzzy_matching_folds_d_with_stroke(archive: Archive) -> None:
    study = generate_uid()
    archive.ingest(make_instance(study_uid=study, patient_name="Đặng^Quốc Bảo"))
    assert _uids(archive.find("STUDY", _filter(PatientName="dang", fuzzy="true")).matches) == [
        study]


def test_find_by_date_range_and_modalities_in_study(archive: Archive) -> None:
    old, new = generate_uid(), generate_uid()
    archive.ingest(make_instance(study_uid=old, study_date="20230105", modality="MR"))
    archive.ingest(make_instance(study_uid=new, study_date="20240610", modality="CT"))
    assert _uids(archive.find("STUDY", _filter(StudyDate="20240101-")).matches) == [new]
    assert _uids(archive.find("STUDY", _filter(StudyDate="-20231231")).matches) == [old]
    assert _uids(archive.find("STUDY", _filter(StudyDate="20230101-20241231")).matches) == [
        new, old]  # newest first
    assert _uids(archive.find("STUDY", _filter(ModalitiesInStudy="MR")).matches) == [old]


def test_find_by_national_id_in_other_patient_ids(archive: Archive) -> None:
    study = generate_uid()
    archive.ingest(make_instance(
        study_uid=study,
        OtherPatientIDsSequence=[{"PatientID": "079123456789", "IssuerOfPatientID": "CCCD",
                                  "TypeOfPatientID": "TEXT"}],
    ))
    archive.ingest(make_instance(patient_id="OTHER"))
    key = "OtherPatientIDsSequence.PatientID"
    found = archive.find("STUDY", Filter((parse_match("00101002.00100020", "079123456789"),)))
    assert _uids(found.matches) == [study], key


def test_study_result_counts_series_and_instances(archive: Archive) -> None:
    study, series = generate_uid(), generate_uid()
    for _ in range(3):
        archive.ingest(make_instance(study_uid=study, series_uid=series))
    archive.ingest(make_instance(study_uid=study, modality="MR"))
    archive.ingest(make_instance(study_uid=study, modality="CT"))  # a second CT series
    other = generate_uid()
    archive.ingest(make_instance(study_uid=other, modality="US"))
    matches = {m["0020000D"]["Value"][0]: m
               for m in archive.find("STUDY", _filter(PatientID="BN0001")).matches}
    match = matches[study]
    assert match["00201206"]["Value"] == [3]
    assert match["00201208"]["Value"] == [5]
    assert match["00080061"]["Value"] == ["CT", "MR"]  # each modality once
    assert matches[other]["00201206"]["Value"] == [1]
    assert matches[other]["00201208"]["Value"] == [1]
    assert matches[other]["00080061"]["Value"] == ["US"]


def test_series_and_image_levels(archive: Archive) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    for n, sop in enumerate(sops, start=1):
        archive.ingest(make_instance(study_uid=study, series_uid=series, sop_uid=sop,
                                     InstanceNumber=n))
    series_found = archive.find("SERIES", _filter(StudyInstanceUID=study)).matches
    assert _uids(series_found, "0020000E") == [series]
    assert series_found[0]["00201209"]["Value"] == [3]
    images = archive.find("IMAGE", _filter(SeriesInstanceUID=series)).matches
    assert _uids(images, "00080018") == sops


def test_limit_marks_truncated(archive: Archive) -> None:
    for _ in range(3):
        archive.ingest(make_instance(patient_id="LIMIT"))
    result = archive.find("STUDY", _filter(PatientID="LIMIT"), limit=2)
    assert len(result.matches) == 2 and result.truncated


def test_metadata_is_served_from_the_index(archive: Archive) -> None:
    study = generate_uid()
    archive.ingest(make_instance(study_uid=study))
    (text,) = archive.metadata(study)
    assert '"7FE00010"' in text and "BulkDataURI" in text


def test_unknown_study_is_not_found(archive: Archive) -> None:
    with pytest.raises(NotFound, match="1.2.3.4"):
        archive.instances("1.2.3.4")


def test_delete_study_removes_rows_and_blobs(archive: Archive) -> None:
    study = generate_uid()
    archive.ingest(make_instance(study_uid=study))
    archive.ingest(make_instance(study_uid=study))
    assert archive.delete_study(study) == 2
    assert archive.counts()["instances"] == 0
    assert list(archive.store.keys()) == []


def test_blob_keys_by_prefix_list_only_that_folder(archive: Archive) -> None:
    study = generate_uid()
    archive.ingest(make_instance(study_uid=study))
    archive.ingest(make_instance())
    keys = list(archive.store.keys(f"studies/{study}/"))
    assert len(keys) == 1 and keys[0].startswith(f"studies/{study}/series/")
    assert len(list(archive.store.keys("studies/"))) == 2
    assert list(archive.store.keys("nothing-here/")) == []
