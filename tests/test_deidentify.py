"""De-identified export (PS3.15 Annex E): real instances in a real archive, exported to a
ZIP, read back with pydicom and checked attribute by attribute against Table E.1-1."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance
from minipacs.archive import Archive
from minipacs.config import Settings
from minipacs.deidentify.export import ExportSummary, export_deidentified
from minipacs.deidentify.models import DeidentificationExport
from minipacs.deidentify.profile import ProfileOptions
from minipacs.errors import Conflict, NotFound, QueryError
from minipacs.index.models import AuditEvent
from minipacs.web.query_params import parse_qido
from node_tools import minipacs_cli

PATIENT_NAME = "Nguyễn^Thị Hồng Nhung"
PATIENT_ID = "BN-PHI-4711"
CCCD = "079123456789"
ALL_OPTIONS = ProfileOptions(retain_longitudinal_modified_dates=True,
                             retain_device_identity=True, clean_descriptors=True)

# Attributes the test instance carries, with the original value and what PS3.15 Table
# E.1-1 asks: the Basic Profile column (compound actions as the implementation resolves
# them: X/Z -> Z, X/D, Z/D and X/Z/D -> D) and, where the option columns have an entry,
# what the option turns it into (K keep, C clean/shift). Written from the standard, not
# from the implementation's table.
TABLE: list[tuple[str, Any, str, str]] = [
    ("IssuerOfPatientID", "BV-CHO-RAY", "X", ""),
    ("PatientBirthDate", "19800517", "Z", ""),
    ("PatientSex", "F", "Z", ""),
    ("PatientAge", "043Y", "X", ""),
    ("PatientAddress", "12 Lê Lợi, Quận 1, TP.HCM", "X", ""),
    ("PatientTelephoneNumbers", "0903123456", "X", ""),
    ("OtherPatientNames", "Nguyen^Thi Hong Nhung", "X", ""),
    ("AccessionNumber", "ACC-PHI-1", "Z", ""),
    ("StudyID", "ST-PHI-9", "Z", ""),
    ("ReferringPhysicianName", "Trần^Văn Bình", "Z", ""),
    ("PerformingPhysicianName", "Lê^Thị Mai", "X", ""),
    ("OperatorsName", "Phạm^Quốc Huy", "D", ""),
    ("InstitutionName", "Bệnh viện Chợ Rẫy", "D", ""),
    ("InstitutionAddress", "201B Nguyễn Chí Thanh", "X", ""),
    ("StationName", "CTROOM3", "D", "K"),
    ("DeviceSerialNumber", "SN-998877", "D", "K"),
    ("StudyDescription", "CT bụng Nguyễn Thị Hồng Nhung", "X", "C"),
    ("SeriesDescription", "Bụng có cản quang 0903123456", "X", "C"),
    ("ImageComments", "Ghi chú ngày 17/05/2024 cho BN-PHI-4711", "X", "C"),
    ("ProtocolName", "ABDOMEN ROUTINE", "D", "C"),
    ("AdditionalPatientHistory", "Tiền sử: mổ ruột thừa", "X", "C"),
    ("PatientComments", "Gọi người nhà Trần Văn Bình", "X", "C"),
    ("StudyDate", "20240517", "Z", "C"),
    ("SeriesDate", "20240517", "D", "C"),
    ("AcquisitionDate", "20240518", "Z", "C"),
    ("ContentDate", "20240519", "D", "C"),
    ("AcquisitionDateTime", "20240518093000.000000+0700", "D", "C"),
    ("StudyTime", "093000", "Z", "C"),
    ("ContentTime", "093500", "D", "C"),
    ("InstanceCreatorUID", "1.2.826.0.1.3680043.10.1.777", "U", ""),
    ("FrameOfReferenceUID", "1.2.826.0.1.3680043.10.1.888", "U", ""),
    ("Manufacturer", "ACME Medical", "K", ""),       # not listed: kept
    ("SliceThickness", "2.5", "K", ""),              # not listed: kept
]
_DATES = {"PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"}


def _phi_instance(study_uid: str, series_uid: str, sop_uid: str, **extra: Any) -> bytes:
    values: dict[str, Any] = {keyword: value for keyword, value, _, _ in TABLE}
    values.update(
        OtherPatientIDsSequence=[{"PatientID": CCCD, "IssuerOfPatientID": "CCCD",
                                  "TypeOfPatientID": "TEXT"}],
        # X/Z/U*: kept, its UIDs remapped; a private element hidden in the item goes.
        ReferencedImageSequence=[{"ReferencedSOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                                  "ReferencedSOPInstanceUID": extra.pop("reference", sop_uid)}],
        # X in the Basic Profile, C (kept, items cleaned) with Clean Descriptors.
        RequestAttributesSequence=[{"RequestedProcedureID": "RP-PHI-1",
                                    "ScheduledProcedureStepID": "SPS-PHI-1",
                                    "AccessionNumber": "ACC-PHI-1"}],
        # Not listed: kept, and de-identified inside (nested PHI two levels deep).
        AnatomicRegionSequence=[{"CodeValue": "818981001", "CodingSchemeDesignator": "SCT",
                                 "CodeMeaning": "Abdomen",
                                 "ReferencedImageSequence": [
                                     {"ReferencedSOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                                      "ReferencedSOPInstanceUID": sop_uid}]}],
    )
    values.update(extra)
    part10 = make_instance(patient_name=PATIENT_NAME, patient_id=PATIENT_ID,
                           study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
                           study_date="20240517", **values)
    ds = dcmread(io.BytesIO(part10))
    block = ds.private_block(0x0009, "HOSPITAL PHI", create=True)
    block.add_new(0x01, "LO", PATIENT_ID)
    ds.AnatomicRegionSequence[0].private_block(0x0011, "NESTED PHI", create=True).add_new(
        0x01, "PN", PATIENT_NAME)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _export(archive: Archive, tmp_path: Path, studies: Any, options: ProfileOptions,
            **kwargs: Any) -> tuple[ExportSummary, dict[str, Dataset], bytes]:
    out = tmp_path / f"export-{generate_uid()[-8:]}.zip"
    summary = export_deidentified(archive, studies, options, out, actor="test:researcher",
                                  **kwargs)
    raw = out.read_bytes()
    with zipfile.ZipFile(out) as zf:
        files = {name: dcmread(io.BytesIO(zf.read(name))) for name in zf.namelist()}
    return summary, {str(ds.SOPInstanceUID): ds for ds in files.values()}, raw


def _mapping(archive: Archive, export_id: str) -> list[DeidentificationExport]:
    with Session(archive.engine) as session:
        return list(session.scalars(select(DeidentificationExport)
                                    .where(DeidentificationExport.export_id == export_id)))


def _shift(value: str, days: int) -> str:
    return (dt.datetime.strptime(value[:8], "%Y%m%d").date()
            + dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]


def _one_study(archive: Archive) -> tuple[str, str]:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    archive.ingest(_phi_instance(study, series, sop))
    return study, sop


def _check_table(original: Dataset, out: Dataset, options: ProfileOptions, shift: int | None,
                 pseudonym: str) -> None:
    """Every attribute of TABLE as Table E.1-1 says, one by one."""
    for keyword, value, basic, option in TABLE:
        action = option if option and (
            (option == "K" and options.retain_device_identity)
            or (option == "C" and keyword in _DATES | {"AcquisitionDateTime", "StudyTime",
                                                       "ContentTime"}
                and options.retain_longitudinal_modified_dates)
            or (option == "C" and keyword not in _DATES | {"AcquisitionDateTime",
                                                           "StudyTime", "ContentTime"}
                and options.clean_descriptors)) else basic
        where = f"{keyword}: action {action}"
        got = out.get(keyword)
        if action == "X":
            assert keyword not in out, where
        elif action == "Z":
            assert keyword in out and got in ("", None), f"{where}, got {got!r}"
        elif action == "D":
            assert keyword in out and got not in ("", None) and str(got) != value, where
        elif action == "U":
            assert str(got).startswith("2.25.") and str(got) != value, where
        elif action == "K":
            assert str(got) == value, f"{where}, got {got!r}"
        elif keyword in _DATES or keyword == "AcquisitionDateTime":
            assert shift is not None and str(got) == _shift(value, shift), where
        elif keyword in ("StudyTime", "ContentTime"):
            assert str(got) == value, where  # whole days: the time of day is kept
        else:
            assert keyword in out and str(got) != "", where
    assert str(out.PatientName) == pseudonym and out.PatientID == pseudonym
    assert "OtherPatientIDsSequence" not in out
    assert not any(elem.tag.is_private for elem in out.iterall())
    assert out.AnatomicRegionSequence[0].CodeMeaning == "Abdomen"
    assert out.PatientIdentityRemoved == "YES"
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == \
        [code for code, _ in options.method_codes()]
    assert all(item.CodingSchemeDesignator == "DCM"
               for item in out.DeidentificationMethodCodeSequence)
    assert out.LongitudinalTemporalInformationModified == (
        "MODIFIED" if options.retain_longitudinal_modified_dates else "REMOVED")
    assert out.SOPClassUID == original.SOPClassUID  # well-known UIDs are not remapped
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_basic_profile_acts_on_each_attribute_as_table_e1_1_says(
        archive: Archive, tmp_path: Path) -> None:
    study, sop = _one_study(archive)
    original = dcmread(archive.open_instance(archive.instances(study)[0]))
    summary, files, _ = _export(archive, tmp_path, [study], ProfileOptions())
    (out,) = files.values()
    (row,) = _mapping(archive, summary.export_id)
    assert row.date_shift_days is None
    _check_table(original, out, ProfileOptions(), None, row.pseudonym)
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert "RequestAttributesSequence" not in out  # X without Clean Descriptors
    assert "StudyDescription" not in out and "SeriesDescription" not in out


def test_options_keep_devices_shift_dates_and_clean_descriptors(
        archive: Archive, tmp_path: Path) -> None:
    study, sop = _one_study(archive)
    original = dcmread(archive.open_instance(archive.instances(study)[0]))
    summary, files, _ = _export(archive, tmp_path, [study], ALL_OPTIONS)
    (out,) = files.values()
    (row,) = _mapping(archive, summary.export_id)
    assert row.date_shift_days is not None and -365 <= row.date_shift_days <= -1
    _check_table(original, out, ALL_OPTIONS, row.date_shift_days, row.pseudonym)
    assert [c for c, _ in ALL_OPTIONS.method_codes()] == ["113100", "113107", "113109",
                                                          "113105"]
    # Cleaned, not removed: the description stays, the identifying values go.
    assert out.StudyDescription == "CT bụng"
    assert out.SeriesDescription == "Bụng có cản quang"
    assert out.ImageComments == "Ghi chú ngày cho"
    assert out.PatientComments == "Gọi người nhà"
    assert out.AdditionalPatientHistory == "Tiền sử: mổ ruột thừa"
    item = out.RequestAttributesSequence[0]  # kept under the option, its items cleaned
    assert "RequestedProcedureID" not in item and "ScheduledProcedureStepID" not in item
    assert item.AccessionNumber == ""


def test_uids_are_remapped_consistently_and_references_point_at_exported_instances(
        archive: Archive, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    first, second = generate_uid(), generate_uid()
    archive.ingest(_phi_instance(study, series, first))
    archive.ingest(_phi_instance(study, series, second, reference=first, InstanceNumber=2))
    other_study = generate_uid()
    archive.ingest(_phi_instance(other_study, generate_uid(), generate_uid()))
    summary, files, _ = _export(archive, tmp_path, [study, other_study], ALL_OPTIONS)
    assert (summary.studies, summary.instances) == (2, 3)
    by_study: dict[str, list[Dataset]] = {}
    for ds in files.values():
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    rows = {r.study_instance_uid: r for r in _mapping(archive, summary.export_id)}
    pair = by_study[rows[study].deidentified_study_instance_uid]
    assert len(pair) == 2 and len({str(ds.SeriesInstanceUID) for ds in pair}) == 1
    assert len({str(ds.FrameOfReferenceUID) for ds in pair}) == 1
    new_first = next(ds for ds in pair if ds.InstanceNumber == 1)
    new_second = next(ds for ds in pair if ds.InstanceNumber == 2)
    # The reference to the first instance now names the first instance's exported UID.
    assert new_second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == \
        new_first.SOPInstanceUID
    assert new_second.ReferencedImageSequence[0].ReferencedSOPClassUID == \
        "1.2.840.10008.5.1.4.1.1.2"
    nested = new_first.AnatomicRegionSequence[0].ReferencedImageSequence[0]
    assert nested.ReferencedSOPInstanceUID == new_first.SOPInstanceUID
    assert all(len(str(ds.SOPInstanceUID)) <= 64 for ds in files.values())
    assert {str(ds.StudyInstanceUID) for ds in files.values()}.isdisjoint({study,
                                                                           other_study})
    # One pseudonym and one date shift per patient across the whole export.
    assert len({r.pseudonym for r in rows.values()}) == 1
    assert len({r.date_shift_days for r in rows.values()}) == 1
    # A second export of the same study gets new UIDs: exports cannot be linked.
    _, again, _ = _export(archive, tmp_path, [study], ALL_OPTIONS)
    assert {str(ds.StudyInstanceUID) for ds in again.values()}.isdisjoint(
        {str(ds.StudyInstanceUID) for ds in files.values()})


def test_date_shift_keeps_intervals_between_a_patients_studies(
        archive: Archive, tmp_path: Path) -> None:
    dates = {"20230110": generate_uid(), "20240517": generate_uid()}
    for date, study in dates.items():
        part10 = make_instance(patient_id=PATIENT_ID, patient_name=PATIENT_NAME,
                               study_uid=study, study_date=date, SeriesDate=date,
                               AcquisitionDateTime=date + "101500")
        archive.ingest(part10)
    summary, files, _ = _export(archive, tmp_path, list(dates.values()),
                                ProfileOptions(retain_longitudinal_modified_dates=True))
    (shift,) = {r.date_shift_days for r in _mapping(archive, summary.export_id)}
    assert shift is not None
    got = sorted(str(ds.StudyDate) for ds in files.values())
    assert got == [_shift(d, shift) for d in sorted(dates)]
    assert (dt.datetime.strptime(got[1], "%Y%m%d") - dt.datetime.strptime(got[0], "%Y%m%d")
            ).days == 493
    for ds in files.values():
        assert ds.SeriesDate == ds.StudyDate
        assert ds.AcquisitionDateTime == ds.StudyDate + "101500"


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                                    RLELossless, JPEG2000Lossless])
def test_pixel_data_is_byte_identical(archive: Archive, tmp_path: Path, syntax: str) -> None:
    part10 = make_instance(transfer_syntax=syntax, frames=2)
    original = dcmread(io.BytesIO(part10))
    archive.ingest(part10)
    summary, files, raw = _export(archive, tmp_path, [original.StudyInstanceUID],
                                  ProfileOptions())
    (out,) = files.values()
    assert out.file_meta.TransferSyntaxUID == syntax
    assert out.PixelData == original.PixelData
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        (info,) = zf.infolist()
    compressed = syntax in (RLELossless, JPEG2000Lossless)
    expected = zipfile.ZIP_STORED if compressed else zipfile.ZIP_DEFLATED
    assert info.compress_type == expected


def test_burned_in_candidates_are_refused_unless_cleared_then_flagged(
        archive: Archive, tmp_path: Path) -> None:
    study = generate_uid()
    ct, us, sc, marked = (generate_uid() for _ in range(4))
    archive.ingest(make_instance(study_uid=study, sop_uid=ct))
    archive.ingest(make_instance(modality="US", study_uid=study, sop_uid=us))
    archive.ingest(make_instance(modality="CT", sop_class=SecondaryCaptureImageStorage,
                                 study_uid=study, sop_uid=sc))
    archive.ingest(make_instance(study_uid=study, sop_uid=marked, BurnedInAnnotation="YES"))
    summary, files, _ = _export(archive, tmp_path, [study], ProfileOptions())
    assert summary.instances == 1 and len(files) == 1
    refused = {item.sop_instance_uid: item.reason for item in summary.refused}
    assert set(refused) == {us, sc, marked}
    assert "US" in refused[us] and "Secondary Capture" in refused[sc]
    assert "BurnedInAnnotation" in refused[marked]
    (row,) = _mapping(archive, summary.export_id)
    assert (row.instances, row.refused, row.flagged) == (1, 3, 0)

    cleared, files, _ = _export(archive, tmp_path, [study], ProfileOptions(),
                                include_burned_in=True)
    assert cleared.instances == 4 and cleared.refused == []
    assert {item.sop_instance_uid for item in cleared.flagged} == {us, sc, marked}

    us_only = generate_uid()
    archive.ingest(make_instance(modality="US", study_uid=us_only))
    with pytest.raises(NotFound, match="all 1 instances .* were refused"):
        _export(archive, tmp_path, [us_only], ProfileOptions())
    assert not list(tmp_path.glob("*.partial"))


def test_mapping_stays_in_the_index_and_never_reaches_the_zip(
        archive: Archive, tmp_path: Path) -> None:
    study, _ = _one_study(archive)
    summary, files, raw = _export(archive, tmp_path, [study], ALL_OPTIONS)
    (row,) = _mapping(archive, summary.export_id)
    assert (row.patient_id, row.issuer_of_patient_id) == (PATIENT_ID, "BV-CHO-RAY")
    assert row.study_instance_uid == study and row.actor == "test:researcher"
    assert row.deidentified_study_instance_uid == str(next(iter(files.values()))
                                                      .StudyInstanceUID)
    assert "Retain Device Identity Option" in row.options
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        members = [zf.read(name) for name in zf.namelist()] + [raw,
                                                               "\n".join(zf.namelist()).encode()]
    # The study date is not searched for in the bytes: the shift (1 to 365 days back)
    # can move the acquisition (05-18) or content date (05-19) onto 05-17, which is
    # then a shifted date, not the study's (a flake seen once in CI). It must be moved:
    secrets = [PATIENT_ID, CCCD, study, "Nguyễn", "Nhung", "Nguyen", "Chợ Rẫy", "Trần",
               "ACC-PHI-1", "19800517", row.export_id]
    for blob in members:
        for secret in secrets:
            assert secret.encode() not in blob, secret
            assert secret.encode("utf-16-le") not in blob, secret
    assert all(ds.StudyDate != "20240517" for ds in files.values())


def test_export_is_audited_per_study_and_refuses_to_overwrite(
        archive: Archive, tmp_path: Path) -> None:
    study, _ = _one_study(archive)
    summary, _, _ = _export(archive, tmp_path, [study], ProfileOptions())
    with Session(archive.engine) as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "export")))
    assert [(e.actor, e.patient_id, e.study_instance_uid) for e in events] == [
        ("test:researcher", PATIENT_ID, study)]
    assert summary.export_id in events[0].detail
    with pytest.raises(Conflict, match="already exists"):
        export_deidentified(archive, [study], ProfileOptions(), summary.path, actor="x")
    with pytest.raises(NotFound, match="does not exist"):
        export_deidentified(archive, [study], ProfileOptions(), tmp_path / "no" / "x.zip",
                            actor="x")
    with pytest.raises(NotFound, match="not in the archive"):
        export_deidentified(archive, [generate_uid()], ProfileOptions(),
                            tmp_path / "none.zip", actor="x")


def test_query_selects_the_studies_to_export(archive: Archive, tmp_path: Path) -> None:
    mine, theirs = generate_uid(), generate_uid()
    archive.ingest(make_instance(patient_id=PATIENT_ID, study_uid=mine))
    archive.ingest(make_instance(patient_id="SOMEONE-ELSE", study_uid=theirs))
    filt = parse_qido([("PatientID", PATIENT_ID)]).filter
    summary, _, _ = _export(archive, tmp_path, filt, ProfileOptions())
    assert [r.study_instance_uid for r in _mapping(archive, summary.export_id)] == [mine]
    nobody = parse_qido([("PatientID", "NOBODY")]).filter
    with pytest.raises(QueryError, match="matches no study"):
        export_deidentified(archive, nobody, ProfileOptions(), tmp_path / "n.zip", actor="x")
    assert not (tmp_path / "n.zip").exists()


def test_cli_exports_by_patient_id_and_refuses_without_deidentify(
        settings: Settings, archive: Archive, tmp_path: Path) -> None:
    study, _ = _one_study(archive)
    archive.ingest(make_instance(modality="US", patient_id=PATIENT_ID))
    out = tmp_path / "cli.zip"
    plain = minipacs_cli(settings, "export", "--out", str(out), study)
    assert plain.returncode == 2 and "--deidentify" in plain.stderr and not out.exists()
    done = minipacs_cli(settings, "export", "--deidentify", "--retain-dates-shifted",
                        "--clean-descriptors", "--patient-id", PATIENT_ID, "--out", str(out),
                        "-q")
    assert done.returncode == 1, done.stderr  # one US instance refused
    assert "1 instances of 1 studies" in done.stdout and "1 refused" in done.stdout
    assert "Clean Descriptors Option" in done.stdout
    with zipfile.ZipFile(out) as zf:
        (name,) = zf.namelist()
        assert dcmread(io.BytesIO(zf.read(name))).PatientIdentityRemoved == "YES"
    bad = minipacs_cli(settings, "export", "--deidentify", "--query", "StudyDate=2024x",
                       "--out", str(tmp_path / "bad.zip"))
    assert bad.returncode == 2 and "StudyDate" in bad.stderr


def test_research_role_exports_over_http_and_a_clinician_may_not(
        empty_server: ServerProcess) -> None:
    (stored,) = store(empty_server, make_instance(patient_id=PATIENT_ID,
                                                  patient_name="Nguyễn^Thị Mai"))
    body = {"study_uids": [stored.study], "retain_dates_shifted": True}
    clinician = empty_server.create_token("bs-noi-tru", "clinician")
    refused = httpx.post(f"{empty_server.http_url}/exports/deidentified", json=body,
                         headers={"Authorization": f"Bearer {clinician}"})
    assert refused.status_code == 403 and "export-deidentified" in refused.json()["error"]
    research = empty_server.create_token("nghien-cuu", "research")
    done = httpx.post(f"{empty_server.http_url}/exports/deidentified", json=body,
                      headers={"Authorization": f"Bearer {research}"}, timeout=60)
    assert done.status_code == 200, done.text
    assert done.headers["content-type"] == "application/zip"
    assert PATIENT_ID.encode() not in done.content
    with zipfile.ZipFile(io.BytesIO(done.content)) as zf:
        (name,) = zf.namelist()
        ds = dcmread(io.BytesIO(zf.read(name)))
    assert ds.PatientIdentityRemoved == "YES" and ds.StudyInstanceUID != stored.study
    # The research role sees nothing identified: no query, no images.
    assert httpx.get(f"{empty_server.dicomweb_url}/studies",
                     headers={"Authorization": f"Bearer {research}"}).status_code == 403
    assert not list((empty_server.data_dir / "exports").rglob("*.zip"))
