"""PAdES digital signature of report PDFs (issue #14, reports/signing.py) on a real
server: a self-signed hospital certificate made here with `cryptography`, a report signed
through FHIR, its Encapsulated PDF read back through WADO-RS and the signature checked
with pyHanko's validator; a bad certificate stops the start with the file named."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_auth
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from requests.auth import HTTPBasicAuth

from conftest import Backends, ServerProcess
from dicomweb_peers import store
from factories import make_instance
from minipacs.fhir.diagnostic_report import FINDINGS_URL

SIGNER_CN = "Bệnh viện Chợ Rẫy - Ký số kết quả"
PASSWORD = "mat-khau-chung-thu"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
USER_PASSWORD = "Doc-ket-qua-2024"


def _certificate(tmp: Path, name: str, *, days: tuple[int, int] = (-1, 365),
                 password: str = PASSWORD) -> tuple[Path, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, SIGNER_CN),
                         x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "VN")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + timedelta(days=days[0]))
            .not_valid_after(now + timedelta(days=days[1]))
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp / name
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"report-signing", key, cert, None,
        serialization.BestAvailableEncryption(password.encode())))
    return path, cert


@pytest.fixture(scope="module")
def signing_server(tmp_path_factory: pytest.TempPathFactory,
                   backends: Backends) -> Iterator[tuple[ServerProcess, x509.Certificate]]:
    tmp = tmp_path_factory.mktemp("pades")
    p12, cert = _certificate(tmp, "hospital.p12")
    (tmp / "data").mkdir()
    proc = ServerProcess(tmp / "data", ["--no-load-samples", *backends.server_args()],
                         env={"MINIPACS_REPORT_SIGNING_P12": str(p12),
                              "MINIPACS_REPORT_SIGNING_PASSWORD": PASSWORD}).start()
    yield proc, cert
    proc.stop()


def _report(study: str, sop: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport", "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
        "imagingStudy": [{"reference": f"ImagingStudy/{study}"}],
        "conclusion": "Không thấy tổn thương khu trú trong nhu mô gan.",
        "extension": [{"url": FINDINGS_URL, "valueString": "Gan kích thước bình thường."}],
        "media": [{"link": {"identifier": {"system": "urn:dicom:uid",
                                           "value": f"urn:oid:{sop}"}}}],
    }


def test_signed_report_pdf_carries_a_valid_pades_signature_of_the_hospital(
    signing_server: tuple[ServerProcess, x509.Certificate],
) -> None:
    server, cert = signing_server
    assert "PAdES digital signature on" in server.log()
    name = "bs" + uuid.uuid4().hex[:8]
    server.add_user(name, "radiologist", USER_PASSWORD)
    stored = store(server, make_instance(patient_id="BN" + uuid.uuid4().hex[:8],
                                         patient_name="Lê^Văn Tám"))[0]
    with httpx.Client(base_url=f"{server.http_url}/fhir", timeout=120,
                      auth=(name, USER_PASSWORD)) as client:
        made = client.post("/DiagnosticReport",
                           json=_report(stored.study, stored.sop, "final"))
        assert made.status_code == 201, made.text
    web = DICOMwebClient(url=server.dicomweb_url,
                         session=create_session_from_auth(HTTPBasicAuth(name, USER_PASSWORD)))
    found = [i for i in web.search_for_instances(study_instance_uid=stored.study)
             if i["00080016"]["Value"][0] == ENCAPSULATED_PDF]
    assert len(found) == 1
    ds = web.retrieve_instance(stored.study, found[0]["0020000E"]["Value"][0],
                               found[0]["00080018"]["Value"][0])
    pdf = bytes(ds.EncapsulatedDocument)[:int(ds.EncapsulatedDocumentLength)]

    signatures = PdfFileReader(io.BytesIO(pdf)).embedded_signatures
    assert len(signatures) == 1
    root = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    # pyHanko's validation calls asyncio.run(): in a thread of its own, since the session's
    # Playwright browser keeps an event loop running in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        status = pool.submit(validate_pdf_signature, signatures[0],
                             ValidationContext(trust_roots=[root])).result(timeout=120)
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    assert status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    assert status.signing_cert.subject.native["common_name"] == SIGNER_CN
    assert signatures[0].sig_object["/Name"] == name

    # The audited SHA-256 is the one of the signed PDF that was stored.
    audit = server.http.get("/admin/audit", params={"action": "report-sign"}).json()
    details = " ".join(str(row) for row in audit)
    assert hashlib.sha256(pdf).hexdigest() in details


@pytest.mark.parametrize("case", ["expired", "wrong-password", "missing", "not-p12"])
def test_a_certificate_that_cannot_sign_stops_the_start_naming_the_file(
    tmp_path: Path, backends: Backends, case: str,
) -> None:
    p12 = tmp_path / f"{case}.p12"
    if case == "expired":
        _certificate(tmp_path, p12.name, days=(-30, -1))
    elif case == "wrong-password":
        _certificate(tmp_path, p12.name, password="mot-mat-khau-khac")
    elif case == "not-p12":
        p12.write_bytes(b"-----BEGIN CERTIFICATE-----\nkhong phai\n")
    (tmp_path / "data").mkdir()
    proc = ServerProcess(tmp_path / "data", ["--no-load-samples", *backends.server_args()],
                         env={"MINIPACS_REPORT_SIGNING_P12": str(p12),
                              "MINIPACS_REPORT_SIGNING_PASSWORD": PASSWORD})
    with pytest.raises(RuntimeError, match="exited early") as stopped:
        proc.start()
    message = str(stopped.value)
    assert f"report signing certificate {p12}" in message, message
    expected = {"expired": "is valid from", "wrong-password": "not a PKCS#12 file",
                "missing": "cannot be read", "not-p12": "not a PKCS#12 file"}[case]
    assert expected in message, message
