"""Sequence matching (PS3.4 C.2.2.2.6) through C-FIND (dcmtk findscu -S/-P, pynetdicom)
and QIDO-RS (dicomweb-client), against a real server: same studies through both doors."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from conftest import ServerProcess
from dimse_peers import c_find, run_dcmtk, storescu
from factories import make_instance

DETACHED_STUDY = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (what RIS send)


@dataclass(frozen=True)
class Archive3:
    """Three studies of one patient: A references two studies (two items), B one, C none."""

    patient_id: str
    study_a: str
    study_b: str
    study_c: str
    ref_a1: str
    ref_a2: str
    ref_b: str
    series_a: str


def _item(**keywords: str) -> Dataset:
    item = Dataset()
    for keyword, value in keywords.items():
        setattr(item, keyword, value)
    return item


@pytest.fixture(scope="module")
def stored(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Archive3:
    folder = tmp_path_factory.mktemp("sequences")
    patient = "SEQ-" + generate_uid()[-12:]
    a, b, c = generate_uid(), generate_uid(), generate_uid()
    ref_a1, ref_a2, ref_b = generate_uid(), generate_uid(), generate_uid()
    series_a = generate_uid()
    instances = [
        make_instance(
            study_uid=a,
            series_uid=series_a,
            patient_id=patient,
            study_date="20240102",
            ReferencedStudySequence=[
                {"ReferencedSOPClassUID": DETACHED_STUDY, "ReferencedSOPInstanceUID": ref_a1},
                {
                    "ReferencedSOPClassUID": SecondaryCaptureImageStorage,
                    "ReferencedSOPInstanceUID": ref_a2,
                },
            ],
            ProcedureCodeSequence=[
                {"CodeValue": "24627-2", "CodingSchemeDesignator": "LN", "CodeMeaning": "CT ngực"}
            ],
            RequestAttributesSequence=[
                {
                    "RequestedProcedureID": "RP-" + patient[-6:],
                    "ScheduledProcedureStepID": "SPS-A",
                    "AccessionNumber": "ACC-A",
                }
            ],
        ),
        make_instance(
            study_uid=b,
            patient_id=patient,
            study_date="20240101",
            modality="MR",
            ReferencedStudySequence=[
                {"ReferencedSOPClassUID": DETACHED_STUDY, "ReferencedSOPInstanceUID": ref_b}
            ],
            ProcedureCodeSequence=[
                {
                    "CodeValue": "36643-5",
                    "CodingSchemeDesignator": "LN",
                    "CodeMeaning": "XR chest 2 views",
                }
            ],
        ),
        make_instance(study_uid=c, patient_id=patient, study_date="20231231"),
    ]
    files = []
    for n, data in enumerate(instances):
        path = folder / f"{n}.dcm"
        path.write_bytes(data)
        files.append(path)
    assert storescu(server, *files).returncode == 0
    return Archive3(patient, a, b, c, ref_a1, ref_a2, ref_b, series_a)


def _findscu(server: ServerProcess, tmp_path: Path, model: str, *keys: str) -> list[Dataset]:
    """Responses of one dcmtk findscu run (-S or -P), read back from its -X files."""
    out = tmp_path / f"findscu{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    args: list[str] = []
    for key in keys:
        args += ["-k", key]
    result = run_dcmtk(
        "findscu",
        model,
        "-aec",
        server.ae_title,
        "-X",
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID",
        *args,
        "127.0.0.1",
        str(server.dicom_port),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def _studies(responses: list[Dataset]) -> set[str]:
    return {str(ds.StudyInstanceUID) for ds in responses}


def _qido(server: ServerProcess, **filters: str) -> set[str]:
    client = DICOMwebClient(url=server.dicomweb_url, headers=server.auth)
    return {s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters=filters)}


@pytest.mark.parametrize("model", ["-S", "-P"])
def test_findscu_matches_a_referenced_study_and_misses_an_unknown_one(
    server: ServerProcess, stored: Archive3, tmp_path: Path, model: str
) -> None:
    hit = _findscu(
        server,
        tmp_path,
        model,
        f"PatientID={stored.patient_id}",
        f"ReferencedStudySequence[0].ReferencedSOPInstanceUID={stored.ref_a2}",
    )
    assert _studies(hit) == {stored.study_a}
    miss = _findscu(
        server,
        tmp_path,
        model,
        f"ReferencedStudySequence[0].ReferencedSOPInstanceUID={generate_uid()}",
    )
    assert miss == []
    # The same query through QIDO-RS, by keyword path and by tag path:
    assert _qido(server, **{"ReferencedStudySequence.ReferencedSOPInstanceUID": stored.ref_a2}) == {
        stored.study_a
    }
    assert _qido(server, **{"00081110.00081155": stored.ref_a2}) == {stored.study_a}


def test_keys_of_one_query_item_must_match_in_the_same_stored_item(
    server: ServerProcess, stored: Archive3, tmp_path: Path
) -> None:
    # A holds (Detached, ref_a1) and (SC, ref_a2): SC with ref_a1 is in no one item.
    crossed = (
        f"ReferencedStudySequence[0].ReferencedSOPClassUID={SecondaryCaptureImageStorage}",
        f"ReferencedStudySequence[0].ReferencedSOPInstanceUID={stored.ref_a1}",
    )
    assert _findscu(server, tmp_path, "-S", *crossed) == []
    assert (
        _qido(
            server,
            **{
                "ReferencedStudySequence.ReferencedSOPClassUID": SecondaryCaptureImageStorage,
                "ReferencedStudySequence.ReferencedSOPInstanceUID": stored.ref_a1,
            },
        )
        == set()
    )
    together = (
        f"ReferencedStudySequence[0].ReferencedSOPClassUID={SecondaryCaptureImageStorage}",
        f"ReferencedStudySequence[0].ReferencedSOPInstanceUID={stored.ref_a2}",
    )
    (found,) = _findscu(server, tmp_path, "-P", *together)
    assert found.StudyInstanceUID == stored.study_a
    # The response carries the matching item only, with the requested attributes.
    (item,) = found.ReferencedStudySequence
    assert (item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) == (
        SecondaryCaptureImageStorage,
        stored.ref_a2,
    )


def test_wildcards_and_lists_inside_a_code_sequence_item(
    server: ServerProcess, stored: Archive3, tmp_path: Path
) -> None:
    scoped = f"PatientID={stored.patient_id}"
    wildcard = _findscu(
        server,
        tmp_path,
        "-S",
        scoped,
        "ProcedureCodeSequence[0].CodeMeaning=CT ng*",
        "ProcedureCodeSequence[0].CodingSchemeDesignator=LN",
    )
    assert _studies(wildcard) == {stored.study_a}
    assert wildcard[0].ProcedureCodeSequence[0].CodeMeaning == "CT ngực"
    by_scheme = _findscu(
        server, tmp_path, "-S", scoped, "ProcedureCodeSequence[0].CodingSchemeDesignator=LN"
    )
    assert _studies(by_scheme) == {stored.study_a, stored.study_b}
    assert _qido(
        server, PatientID=stored.patient_id, **{"ProcedureCodeSequence.CodeValue": "24627-2"}
    ) == {stored.study_a}
    assert _qido(
        server, PatientID=stored.patient_id, **{"ProcedureCodeSequence.CodeMeaning": "XR*"}
    ) == {stored.study_b}
    # Matching is case-sensitive outside person names (PS3.4 C.2.2.2.4).
    assert (
        _findscu(server, tmp_path, "-S", scoped, "ProcedureCodeSequence[0].CodeMeaning=ct ng*")
        == []
    )


def test_empty_sequence_key_returns_the_stored_items_exactly(
    server: ServerProcess, stored: Archive3
) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = stored.patient_id
    query.StudyInstanceUID = ""
    query.ReferencedStudySequence = Sequence([])
    query.ProcedureCodeSequence = Sequence([Dataset()])  # one empty item: the same
    found = {str(ds.StudyInstanceUID): ds for ds in c_find(server, query)}
    assert set(found) == {stored.study_a, stored.study_b, stored.study_c}
    a = found[stored.study_a]
    assert [
        (i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in a.ReferencedStudySequence
    ] == [(DETACHED_STUDY, stored.ref_a1), (SecondaryCaptureImageStorage, stored.ref_a2)]
    (code,) = a.ProcedureCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "24627-2",
        "LN",
        "CT ngực",
    )
    assert len(found[stored.study_b].ReferencedStudySequence) == 1
    assert "ReferencedStudySequence" in found[stored.study_c]
    assert len(found[stored.study_c].ReferencedStudySequence) == 0

    # An item naming attributes returns just those, for every item.
    query.ReferencedStudySequence = Sequence([_item(ReferencedSOPInstanceUID="")])
    query.StudyInstanceUID = stored.study_a
    (a,) = c_find(server, query)
    assert [list(i.keys()) for i in a.ReferencedStudySequence] == [[0x00081155], [0x00081155]]


def test_qido_returns_the_sequence_when_asked_with_includefield(
    server: ServerProcess, stored: Archive3
) -> None:
    response = httpx.get(
        f"{server.dicomweb_url}/studies",
        params={
            "PatientID": stored.patient_id,
            "StudyInstanceUID": stored.study_a,
            "includefield": "ReferencedStudySequence,ProcedureCodeSequence.CodeValue",
        },
     headers=server.auth)
    assert response.status_code == 200, response.text
    (study,) = response.json()
    assert [i["00081155"]["Value"][0] for i in study["00081110"]["Value"]] == [
        stored.ref_a1,
        stored.ref_a2,
    ]
    assert study["00081032"]["Value"][0]["00080104"]["Value"] == ["CT ngực"]


def test_series_level_request_attributes_and_relational_study_level(
    server: ServerProcess, stored: Archive3, tmp_path: Path
) -> None:
    requested = "RP-" + stored.patient_id[-6:]
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.SeriesInstanceUID = ""
    query.RequestAttributesSequence = Sequence(
        [_item(RequestedProcedureID=requested, ScheduledProcedureStepID="")]
    )
    (series,) = c_find(server, query)
    assert series.SeriesInstanceUID == stored.series_a
    (item,) = series.RequestAttributesSequence
    assert (item.RequestedProcedureID, item.ScheduledProcedureStepID) == (requested, "SPS-A")
    # Keys of a lower level match at a higher one (relational), as for columns.
    at_study = _findscu(
        server, tmp_path, "-S", f"RequestAttributesSequence[0].RequestedProcedureID={requested}"
    )
    assert _studies(at_study) == {stored.study_a}
    assert _qido(server, **{"RequestAttributesSequence.RequestedProcedureID": requested}) == {
        stored.study_a
    }
    series_qido = DICOMwebClient(url=server.dicomweb_url, headers=server.auth).search_for_series(
        search_filters={
            "RequestAttributesSequence.ScheduledProcedureStepID": "SPS-A",
            "PatientID": stored.patient_id,
        }
    )
    assert [s["0020000E"]["Value"][0] for s in series_qido] == [stored.series_a]
    # PS3.18 Table 6.7.1-2a: a series search returns RequestAttributesSequence unasked.
    (item,) = series_qido[0]["00400275"]["Value"]
    assert item["00401001"]["Value"] == [requested]
    assert item["00400009"]["Value"] == ["SPS-A"]


def _find_status(server: ServerProcess, query: Dataset) -> tuple[int, str]:
    ae = AE(ae_title="SEQFIND")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    final = responses[-1][0]
    return int(final.Status), str(final.get("ErrorComment", ""))


def test_unsupported_sequence_keys_are_refused_naming_the_key(server: ServerProcess) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.ReferencedImageSequence = Sequence([_item(ReferencedSOPInstanceUID="1.2.3")])
    status, comment = _find_status(server, query)
    assert status == 0xA900 and "ReferencedImageSequence" in comment
    qido = httpx.get(
        f"{server.dicomweb_url}/studies",
        params={"ReferencedImageSequence.ReferencedSOPInstanceUID": "1.2.3"},
     headers=server.auth)
    assert qido.status_code == 400 and "ReferencedImageSequence" in qido.json()["error"]

    del query.ReferencedImageSequence
    query.ReferencedStudySequence = Sequence(
        [_item(ReferencedSOPInstanceUID="1.2.3"), _item(ReferencedSOPInstanceUID="1.2.4")]
    )
    status, comment = _find_status(server, query)
    assert status == 0xA900 and "ReferencedStudySequence" in comment


def test_findscu_response_files_hold_what_pynetdicom_sees(
    server: ServerProcess, stored: Archive3, tmp_path: Path
) -> None:
    responses = _findscu(
        server, tmp_path, "-S", f"PatientID={stored.patient_id}", "ReferencedStudySequence"
    )
    by_study = {str(ds.StudyInstanceUID): ds for ds in responses}
    assert set(by_study) == {stored.study_a, stored.study_b, stored.study_c}
    assert [
        str(i.ReferencedSOPInstanceUID) for i in by_study[stored.study_a].ReferencedStudySequence
    ] == [stored.ref_a1, stored.ref_a2]
    raw = io.BytesIO()
    by_study[stored.study_b].save_as(raw)
    assert stored.ref_b.encode() in raw.getvalue()


# ---------------------------------------------------------------------- other patient IDs
def test_other_patient_ids_match_an_issuer_and_number_in_the_same_item(
    server: ServerProcess, tmp_path: Path
) -> None:
    # A national ID (CCCD) and an insurance number arrive on different studies of one
    # patient; the patient keeps both. Another patient holds the same digits, but as an
    # insurance number, and a CCCD of other digits: a query for that number *as a CCCD*
    # must find only the first patient (both keys hold in one item, PS3.4 C.2.2.2.6).
    number = "0791" + generate_uid()[-8:].replace(".", "0")
    insurance = "DN4" + number[-10:]
    first, second = "OID-" + generate_uid()[-10:], "OID-" + generate_uid()[-10:]
    first_a, first_b, second_a = generate_uid(), generate_uid(), generate_uid()
    cccd = {"PatientID": number, "IssuerOfPatientID": "CCCD", "TypeOfPatientID": "TEXT"}
    bhyt = {"PatientID": insurance, "IssuerOfPatientID": "BHYT", "TypeOfPatientID": "TEXT"}
    instances = [
        make_instance(study_uid=first_a, patient_id=first, study_date="20240101",
                      OtherPatientIDsSequence=[cccd]),
        make_instance(study_uid=first_b, patient_id=first, study_date="20240201",
                      OtherPatientIDsSequence=[bhyt]),
        make_instance(study_uid=second_a, patient_id=second, study_date="20240301",
                      OtherPatientIDsSequence=[
                          {"PatientID": number, "IssuerOfPatientID": "BHYT"},
                          {"PatientID": "001" + number[3:], "IssuerOfPatientID": "CCCD"},
                      ]),
    ]
    files = []
    for n, data in enumerate(instances):
        path = tmp_path / f"oid{n}.dcm"
        path.write_bytes(data)
        files.append(path)
    assert storescu(server, *files).returncode == 0

    as_cccd = (
        f"OtherPatientIDsSequence[0].PatientID={number}",
        "OtherPatientIDsSequence[0].IssuerOfPatientID=CCCD",
    )
    for model in ("-S", "-P"):
        assert _studies(_findscu(server, tmp_path, model, *as_cccd)) == {first_a, first_b}
    # The number alone (the patient's column of other IDs) finds both patients.
    alone = _findscu(server, tmp_path, "-S", f"OtherPatientIDsSequence[0].PatientID={number}")
    assert _studies(alone) == {first_a, first_b, second_a}
    # Wildcards within the item: any CCCD starting with 001 is the second patient's.
    wild = _findscu(
        server,
        tmp_path,
        "-S",
        "OtherPatientIDsSequence[0].PatientID=001*",
        "OtherPatientIDsSequence[0].IssuerOfPatientID=CCCD",
    )
    assert second_a in _studies(wild) and first_a not in _studies(wild)

    qido = {
        "OtherPatientIDsSequence.PatientID": number,
        "OtherPatientIDsSequence.IssuerOfPatientID": "CCCD",
    }
    assert _qido(server, **qido) == {first_a, first_b}
    assert _qido(server, **{**qido, "OtherPatientIDsSequence.IssuerOfPatientID": "BHYT"}) == {
        second_a
    }

    # The response carries the matching item only, whole as asked; the patient keeps
    # both identifiers from its two studies, so an empty key returns them all.
    (answer, *_) = _findscu(
        server, tmp_path, "-S", f"StudyInstanceUID={first_a}", *as_cccd,
        "OtherPatientIDsSequence[0].TypeOfPatientID",
    )
    assert [(i.PatientID, i.IssuerOfPatientID, i.TypeOfPatientID)
            for i in answer.OtherPatientIDsSequence] == [(number, "CCCD", "TEXT")]
    (every,) = _findscu(
        server, tmp_path, "-S", f"StudyInstanceUID={first_b}", "OtherPatientIDsSequence"
    )
    assert {(i.PatientID, i.IssuerOfPatientID) for i in every.OtherPatientIDsSequence} == {
        (number, "CCCD"), (insurance, "BHYT")
    }
