"""C-FIND beyond the basics: both information models agree, PATIENT level, C-CANCEL,
the match limit, and identifiers in other character sets."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from conftest import ServerProcess
from dimse_peers import c_find, run_dcmtk, storescu
from factories import make_instance


def _store(server: ServerProcess, tmp_path: Path, patient_id: str, studies: int = 2,
           **common: str) -> list[str]:
    uids = []
    files = []
    for n in range(studies):
        study = generate_uid()
        uids.append(study)
        for i, modality in enumerate(["CT", "MR"][: n + 1]):
            path = tmp_path / f"{patient_id}-{n}-{i}.dcm"
            path.write_bytes(make_instance(study_uid=study, patient_id=patient_id,
                                           modality=modality, study_date=f"2023010{n + 1}",
                                           **common))
            files.append(path)
    assert storescu(server, *files).returncode == 0
    return uids


def _study_query(patient_id: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient_id
    ds.PatientName = ""
    ds.StudyInstanceUID = ""
    ds.StudyDate = ""
    ds.ModalitiesInStudy = ""
    ds.NumberOfStudyRelatedInstances = ""
    return ds


def _as_tuples(results: list[Dataset]) -> list[tuple[str, ...]]:
    return sorted(
        (str(ds.StudyInstanceUID), str(ds.PatientName), str(ds.StudyDate),
         str(ds.ModalitiesInStudy), str(ds.NumberOfStudyRelatedInstances))
        for ds in results
    )


def test_patient_root_and_study_root_give_the_same_studies_and_series(
    server: ServerProcess, tmp_path: Path
) -> None:
    patient_id = "QM-" + generate_uid()[-10:]
    studies = _store(server, tmp_path, patient_id)
    via_study_root = c_find(server, _study_query(patient_id), model="S")
    via_patient_root = c_find(server, _study_query(patient_id), model="P")
    assert {str(ds.StudyInstanceUID) for ds in via_study_root} == set(studies)
    assert _as_tuples(via_study_root) == _as_tuples(via_patient_root)

    series_query = Dataset()
    series_query.QueryRetrieveLevel = "SERIES"
    series_query.PatientID = patient_id
    series_query.StudyInstanceUID = studies[1]
    series_query.SeriesInstanceUID = ""
    series_query.Modality = ""
    s_root = sorted(str(ds.Modality) for ds in c_find(server, series_query, model="S"))
    p_root = sorted(str(ds.Modality) for ds in c_find(server, series_query, model="P"))
    assert s_root == p_root == ["CT", "MR"]


def test_patient_root_patient_level_returns_the_patient_with_related_counts(
    server: ServerProcess, tmp_path: Path
) -> None:
    patient_id = "QMP-" + generate_uid()[-10:]
    _store(server, tmp_path, patient_id, patient_name="Trần^Thị Bích")
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = patient_id
    query.PatientName = ""
    query.NumberOfPatientRelatedStudies = ""
    query.NumberOfPatientRelatedInstances = ""
    (patient,) = c_find(server, query, model="P")
    assert str(patient.PatientName) == "Trần^Thị Bích"
    assert int(patient.NumberOfPatientRelatedStudies) == 2
    assert int(patient.NumberOfPatientRelatedInstances) == 3

    findscu = run_dcmtk(
        "findscu", "-P", "-aec", server.ae_title, "-k", "QueryRetrieveLevel=PATIENT",
        "-k", f"PatientID={patient_id}", "-k", "NumberOfPatientRelatedSeries",
        "127.0.0.1", str(server.dicom_port),
    )
    assert findscu.returncode == 0, findscu.stderr
    assert "NumberOfPatientRelatedSeries" in findscu.stderr + findscu.stdout
    assert "[3]" in findscu.stderr + findscu.stdout or "[3 ]" in findscu.stderr


def _raw_find(server: ServerProcess, identifier: Dataset, model: str, *, cancel: bool
              ) -> tuple[int, int]:
    """Send a C-FIND (and, after its first response, a C-CANCEL); returns (pending count,
    final status)."""
    ae = AE(ae_title="CANCELER")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    # Hold pynetdicom's reactor (as its own send_c_* do) so the responses come to us.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        context = assoc.accepted_contexts[0]
        req = C_FIND()
        req.MessageID = 7
        req.AffectedSOPClassUID = model
        req.Priority = 2
        req.Identifier = io.BytesIO(encode(identifier, True, True))
        assoc.dimse.send_msg(req, context.context_id)
        pending = 0
        while True:
            _, rsp = assoc.dimse.get_msg(block=True)
            assert rsp is not None, "no response from the server"
            if rsp.Status in (0xFF00, 0xFF01):
                pending += 1
                if cancel and pending == 1:
                    # PS3.7 9.3.2.3: C-CANCEL-FIND-RQ names the request by its Message
                    # ID; sent once the query runs (pynetdicom drops earlier ones).
                    assoc.send_c_cancel(7, context.context_id)
                continue
            return pending, int(rsp.Status)
    finally:
        assoc._reactor_checkpoint.set()
        assoc.release()


def test_ccancel_stops_a_running_query(server: ServerProcess) -> None:
    everything = Dataset()
    everything.QueryRetrieveLevel = "IMAGE"
    everything.SOPInstanceUID = ""
    model = StudyRootQueryRetrieveInformationModelFind
    total, status = _raw_find(server, everything, model, cancel=False)
    assert status == 0x0000 and total >= 40  # the sample studies alone hold more
    # An SCP may legitimately finish before it reads a cancel (PS3.7 9.1.2.1); the server
    # looks for one every few responses, so it must honour it at least once in 3 tries.
    outcomes = []
    for _ in range(3):
        sent, status = _raw_find(server, everything, model, cancel=True)
        outcomes.append((sent, status))
        if status == 0xFE00:
            break
    assert outcomes[-1][1] == 0xFE00, outcomes
    assert outcomes[-1][0] < total


@pytest.fixture
def small_limit_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "limited", ["--no-load-samples", "--max-query-results", "2"])
    proc.data_dir.mkdir()
    proc.start()
    yield proc
    proc.stop()


def test_more_matches_than_the_limit_give_the_first_ones_then_a700_and_a_log_warning(
    small_limit_server: ServerProcess, tmp_path: Path
) -> None:
    _store(small_limit_server, tmp_path, "LIMIT-1", studies=3)
    query = _study_query("LIMIT-1")
    sent, status = _raw_find(small_limit_server, query,
                             StudyRootQueryRetrieveInformationModelFind, cancel=False)
    assert (sent, status) == (2, 0xA700)
    assert "more than 2 matches" in small_limit_server.log()
    query.StudyDate = "20230101-20230102"
    assert len(c_find(small_limit_server, query)) == 2  # narrowed: complete, success


def test_study_root_refuses_the_patient_level(server: ServerProcess) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "ANY"
    _, status = _raw_find(server, query, StudyRootQueryRetrieveInformationModelFind,
                          cancel=False)
    assert status == 0xA900
    _, status = _raw_find(server, query, PatientRootQueryRetrieveInformationModelFind,
                          cancel=False)
    assert status == 0x0000


def test_identifier_in_latin1_matches_names_stored_in_utf8(
    server: ServerProcess, tmp_path: Path
) -> None:
    patient_id = "QMC-" + generate_uid()[-10:]
    _store(server, tmp_path, patient_id, studies=1, patient_name="Müller^Jürgen")
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 100"
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = "MÜLLER^J*"  # PN matching ignores case (PS3.4 C.2.2.2.1)
    query.PatientID = patient_id
    query.StudyInstanceUID = ""
    raw = encode(query, True, True)
    assert "Ü".encode("latin-1") in raw  # really sent as ISO 8859-1
    (match,) = c_find(server, query)
    assert str(match.PatientName) == "Müller^Jürgen"
    assert match.SpecificCharacterSet == "ISO_IR 192"


def _negotiated_find(
    server: ServerProcess, identifier: Dataset, options: bytes | None
) -> tuple[bytes | None, list[Dataset]]:
    """C-FIND (Study Root) on an association that asks `options` by SOP class extended
    negotiation: what the SCP answered for them, and the matches."""
    ae = AE(ae_title="EXTNEG")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ext_neg = []
    if options is not None:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = StudyRootQueryRetrieveInformationModelFind
        item.service_class_application_information = options
        ext_neg.append(item)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title,
                         ext_neg=ext_neg)
    assert assoc.is_established
    try:
        answered = assoc.acceptor.sop_class_extended.get(
            StudyRootQueryRetrieveInformationModelFind)
        responses = list(assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    assert int(responses[-1][0].Status) == 0x0000
    return answered, [ds for status, ds in responses if status.Status == 0xFF00]


def test_fuzzy_name_matching_when_negotiated_finds_names_typed_without_diacritics(
    server: ServerProcess, tmp_path: Path
) -> None:
    # A workstation typing "nguyen van an" on an unaccented keyboard finds "Nguyễn Văn An"
    # once the association agreed on fuzzy semantic matching of person names (PS3.4
    # C.5.1.1, byte 3); relational queries (byte 1) are agreed; combined date-time (2)
    # and timezone adjustment (4) are declined.
    patient_id = "FZ-" + generate_uid()[-10:]
    (study,) = _store(server, tmp_path, patient_id, studies=1, patient_name="Nguyễn^Văn An")
    query = _study_query(patient_id)
    query.PatientName = "nguyen van an"

    answered, fuzzy = _negotiated_find(server, query, b"\x01\x01\x01\x01")
    assert answered == b"\x01\x00\x01\x00"
    assert [str(ds.StudyInstanceUID) for ds in fuzzy] == [study]
    assert str(fuzzy[0].PatientName) == "Nguyễn^Văn An"  # returned as stored

    query.PatientName = "van"  # the start of any name component
    _, by_component = _negotiated_find(server, query, b"\x00\x00\x01")
    assert [str(ds.StudyInstanceUID) for ds in by_component] == [study]

    query.PatientName = "nguyen van an"
    answered, strict = _negotiated_find(server, query, b"\x01")
    assert answered == b"\x01" and strict == []  # not agreed: diacritics count
    assert _negotiated_find(server, query, None) == (None, [])
