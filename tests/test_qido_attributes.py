"""QIDO-RS answers carry the attributes PS3.18 Tables 10.6.3-3 (study), 10.6.3-4 (series)
and 10.6.3-5 (instance) require, Timezone Offset From UTC included when it is known;
asked with dicomweb-client against a real server."""

from __future__ import annotations

from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from conftest import ServerProcess
from dicomweb_peers import Stored, store
from factories import make_instance

STUDY_TABLE = ("00080020", "00080030", "00080050", "00080056", "00080061", "00080090",
               "00081190", "00100010", "00100020", "00100030", "00100040", "0020000D",
               "00200010", "00201206", "00201208")
SERIES_TABLE = ("00080060", "0008103E", "00081190", "0020000E", "00200011", "00201209")
INSTANCE_TABLE = ("00080016", "00080018", "00080056", "00081190", "00200013", "00280008",
                  "00280010", "00280011", "00280100")


@pytest.fixture(scope="module")
def hanoi(server: ServerProcess) -> list[Stored]:
    """A study acquired at UTC+07:00: a CT series of two instances and an MR series."""
    study = generate_uid()
    common: dict[str, Any] = {
        "study_uid": study, "patient_id": "QA-TZ-1", "patient_name": "Phạm^Minh Đức",
        "TimezoneOffsetFromUTC": "+0700", "ReferringPhysicianName": "Lê^Thu",
        "PatientBirthDate": "19900220", "PatientSex": "M", "StudyID": "S42",
        "StudyTime": "101500",
    }
    ct = generate_uid()
    return store(server,
                 make_instance(series_uid=ct, InstanceNumber=1, SeriesNumber=1,
                               PerformedProcedureStepStartDate="20240315",
                               PerformedProcedureStepStartTime="101000", **common),
                 make_instance(series_uid=ct, InstanceNumber=2, SeriesNumber=1, **common),
                 make_instance(modality="MR", SeriesNumber=2, **common))


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> DICOMwebClient:
    return DICOMwebClient(url=server.dicomweb_url, headers=server.auth)


def _value(model: dict[str, Any], tag: str) -> Any:
    values = model[tag].get("Value")
    return values[0] if values else None


def test_study_search_returns_table_10_6_3_3_with_the_timezone(
        client: DICOMwebClient, hanoi: list[Stored]) -> None:
    (study,) = client.search_for_studies(search_filters={"PatientID": "QA-TZ-1"})
    assert [tag for tag in STUDY_TABLE if tag not in study] == []
    assert _value(study, "00080201") == "+0700"
    assert study["00080201"]["vr"] == "SH"
    assert study["00080061"]["Value"] == ["CT", "MR"]
    assert _value(study, "00201206") == 2 and _value(study, "00201208") == 3
    assert _value(study, "00080090")["Alphabetic"] == "Lê^Thu"
    assert _value(study, "00100030") == "19900220" and _value(study, "00100040") == "M"
    assert _value(study, "00200010") == "S42" and _value(study, "00080030") == "101500"
    assert _value(study, "00081190").endswith(f"/studies/{hanoi[0].study}")


def test_timezone_is_absent_when_unknown(client: DICOMwebClient,
                                         server: ServerProcess) -> None:
    store(server, make_instance(patient_id="QA-TZ-NONE"))
    (study,) = client.search_for_studies(search_filters={"PatientID": "QA-TZ-NONE"})
    (series,) = client.search_for_series(search_filters={"PatientID": "QA-TZ-NONE"})
    (instance,) = client.search_for_instances(search_filters={"PatientID": "QA-TZ-NONE"})
    # "Shall be present if known": not known, so not sent (not even empty).
    assert "00080201" not in study and "00080201" not in series
    assert "00080201" not in instance and "00400244" not in series


def test_series_search_returns_table_10_6_3_4(client: DICOMwebClient,
                                              hanoi: list[Stored]) -> None:
    found = client.search_for_series(hanoi[0].study)
    by_uid = {_value(s, "0020000E"): s for s in found}
    ct = by_uid[hanoi[0].series]
    assert [tag for tag in SERIES_TABLE if tag not in ct] == []
    assert _value(ct, "00080201") == "+0700"
    assert _value(ct, "00400244") == "20240315" and _value(ct, "00400245") == "101000"
    assert _value(ct, "00201209") == 2
    assert "00400244" not in by_uid[hanoi[2].series]  # the MR series has no PPS start


def test_all_series_search_carries_every_study_attribute(client: DICOMwebClient,
                                                         hanoi: list[Stored]) -> None:
    # PS3.18 §10.6.3.3.2: with the All Series target, the Table 10.6.3-3 attributes too.
    found = client.search_for_series(search_filters={"PatientID": "QA-TZ-1"})
    assert len(found) == 2
    for series in found:
        missing = [t for t in STUDY_TABLE if t not in series and t != "00081190"]
        assert missing == []
        assert series["00080061"]["Value"] == ["CT", "MR"]
        assert _value(series, "00201206") == 2 and _value(series, "00201208") == 3
        assert _value(series, "00080090")["Alphabetic"] == "Lê^Thu"


def test_instance_search_returns_table_10_6_3_5(client: DICOMwebClient,
                                                hanoi: list[Stored]) -> None:
    found = client.search_for_instances(hanoi[0].study, hanoi[0].series)
    assert len(found) == 2
    for instance in found:
        assert [tag for tag in INSTANCE_TABLE if tag not in instance] == []
        assert _value(instance, "00080201") == "+0700"
    assert sorted(_value(i, "00200013") for i in found) == [1, 2]
