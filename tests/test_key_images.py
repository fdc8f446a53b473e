"""Key images as a Key Object Selection document (issue #14, "Key images"), black-box
over HTTP: POST /dicom-web/studies/{uid}/key-images, then the document read back through
QIDO-RS and WADO-RS as any other DICOMweb client would."""

from __future__ import annotations

import io

import httpx
from pydicom import dcmread
from pydicom.uid import generate_uid

from conftest import ServerProcess
from dicomweb_peers import store
from factories import make_instance

KOS = "1.2.840.10008.5.1.4.1.1.88.59"


def ct_study(server: ServerProcess, count: int = 3) -> tuple[str, str, list[str]]:
    study, series = generate_uid(), generate_uid()
    stored = store(server, *(make_instance(modality="CT", patient_id="BNKEY01", study_uid=study,
                                           series_uid=series, InstanceNumber=i + 1)
                             for i in range(count)))
    return study, series, [s.sop for s in stored]


def headers(server: ServerProcess, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.create_token(f'key-{role}', role)}"}


def test_key_images_are_stored_as_a_kos_in_the_study(server: ServerProcess) -> None:
    study, series, sops = ct_study(server)
    url = f"{server.dicomweb_url}/studies/{study}/key-images"
    answer = httpx.post(url, json={"instances": [sops[0], sops[2]]},
                        headers=headers(server, "radiologist"), timeout=30)
    assert answer.status_code == 201, answer.text
    kos_series, kos_sop = answer.json()["SeriesInstanceUID"], answer.json()["SOPInstanceUID"]
    found = server.http.get(f"{server.dicomweb_url}/studies/{study}/series",
                            params={"Modality": "KO"}, headers={"Accept": "application/dicom+json"})
    assert [s["0020000E"]["Value"][0] for s in found.json()] == [kos_series]
    part10 = server.http.get(
        f"{server.dicomweb_url}/studies/{study}/series/{kos_series}/instances/{kos_sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert part10.status_code == 200
    body = part10.content
    ds = dcmread(io.BytesIO(body[body.index(b"DICM") - 128:]))
    assert ds.SOPClassUID == KOS
    assert ds.Modality == "KO"
    assert ds.PatientID == "BNKEY01" and ds.StudyInstanceUID == study
    title = ds.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "113000", "DCM", "Of Interest")
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == study
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    referenced = [r.ReferencedSOPInstanceUID
                  for r in evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence]
    assert referenced == [sops[0], sops[2]]
    images = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
              for i in ds.ContentSequence if i.ValueType == "IMAGE"]
    assert images == [sops[0], sops[2]]


def test_key_images_are_refused_without_store_and_for_instances_not_in_the_study(
    server: ServerProcess,
) -> None:
    study, _, sops = ct_study(server, count=1)
    url = f"{server.dicomweb_url}/studies/{study}/key-images"
    clinician = httpx.post(url, json={"instances": sops}, headers=headers(server, "clinician"),
                           timeout=30)
    assert clinician.status_code == 403
    missing = generate_uid()
    unknown = httpx.post(url, json={"instances": [missing]},
                         headers=headers(server, "radiologist"), timeout=30)
    assert unknown.status_code == 404
    assert missing in unknown.text
    empty = httpx.post(url, json={"instances": []}, headers=headers(server, "radiologist"),
                       timeout=30)
    assert empty.status_code in (400, 422)
    found = server.http.get(f"{server.dicomweb_url}/studies/{study}/series",
                            params={"Modality": "KO"}, headers={"Accept": "application/dicom+json"})
    assert found.status_code in (200, 204) and not found.content.strip(b"[] \n")
