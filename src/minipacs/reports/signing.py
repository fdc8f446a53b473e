"""PAdES digital signature of report PDFs (issue #14), when the hospital names a
PKCS#12 certificate (MINIPACS_REPORT_SIGNING_P12 + MINIPACS_REPORT_SIGNING_PASSWORD).

The signature is a PAdES baseline B-B signature (ETSI EN 319 142-1, SubFilter
ETSI.CAdES.detached, SHA-256) made with pyHanko and appended to the rendered PDF as an
incremental update, so the signed bytes are exactly the PDF that was rendered; the
Encapsulated PDF stored in the archive (and the SHA-256 audited at signing) is the signed
file. Without a certificate, reports are signed as before (identity + time + hash).

The certificate is read once at start: an unreadable file, a wrong password, a file
without a private key or a certificate outside its validity period stops the server with
a message naming the file (`load_report_signer`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from minipacs.config import Settings

if TYPE_CHECKING:
    from pyhanko.sign import signers

# pyhanko is imported where a signer is made or used, not at module import: it costs
# ~0.5 s of CPU at every start of every node (and CLI command), and most sites never
# configure a signing certificate.

log = logging.getLogger(__name__)

_FIELD = "MinipacsReportSignature"


class SigningCertificateError(ValueError):
    """The configured PKCS#12 file cannot sign reports (the message names the file)."""


@dataclass(frozen=True)
class ReportSigner:
    """Signs report PDFs with one certificate and its private key."""

    signer: signers.SimpleSigner
    subject_cn: str
    not_after: datetime

    def sign(self, pdf: bytes, *, signer_name: str, reason: str) -> bytes:
        """The PDF with a PAdES signature appended (an incremental update) covering the
        whole file. `signer_name` is the radiologist who signed the report."""
        from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
        from pyhanko.sign import fields, signers

        meta = signers.PdfSignatureMetadata(
            field_name=_FIELD, md_algorithm="sha256",
            subfilter=fields.SigSeedSubFilter.PADES,
            name=signer_name, reason=reason)
        pdf_signer = signers.PdfSigner(meta, signer=self.signer)

        async def signing() -> bytes:
            writer = IncrementalPdfFileWriter(BytesIO(pdf))
            out = await pdf_signer.async_sign_pdf(writer, in_place=False)
            return out.getvalue()  # type: ignore[no-any-return]

        # The report service is called from async routes too: run the signature's
        # coroutine on its own loop in a short-lived thread, never on the caller's loop.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, signing()).result(timeout=60)


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def read_report_signer(path: Path, password: str, *,
                       now: datetime | None = None) -> ReportSigner:
    """The signer of a PKCS#12 file; `SigningCertificateError` (naming the file and what
    is wrong) when it cannot be read, has no key, or is not valid at `now`."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SigningCertificateError(
            f"report signing certificate {path}: cannot be read ({error.strerror})") from None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(
            data, password.encode() if password else None)
    except ValueError as error:
        raise SigningCertificateError(
            f"report signing certificate {path}: not a PKCS#12 file this password opens "
            f"({error})") from None
    if key is None or cert is None:
        raise SigningCertificateError(
            f"report signing certificate {path}: holds no private key and certificate pair")
    moment = now or datetime.now(UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise SigningCertificateError(
            f"report signing certificate {path} ({_cn(cert)}) is valid from "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}, "
            f"not on {moment:%Y-%m-%d}")
    der = serialization.Encoding.DER
    signing_key = asn1_keys.PrivateKeyInfo.load(key.private_bytes(
        der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    chain = [asn1_x509.Certificate.load(c.public_bytes(der)) for c in extra or ()]
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    signer = signers.SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(cert.public_bytes(der)),
        signing_key=signing_key,
        cert_registry=SimpleCertificateStore.from_certs(chain))
    return ReportSigner(signer, _cn(cert), cert.not_valid_after_utc)


def load_report_signer(settings: Settings) -> ReportSigner | None:
    """The configured signer, or None (logged: PAdES off). Stops the start
    (`SystemExit`) with the file named when the certificate cannot sign."""
    path = settings.report_signing_p12
    if path is None:
        log.info("report PDFs: PAdES digital signature off (MINIPACS_REPORT_SIGNING_P12 "
                 "unset); signed reports carry the signer, time and SHA-256 only")
        return None
    try:
        signer = read_report_signer(path, settings.report_signing_password)
    except SigningCertificateError as error:
        raise SystemExit(str(error)) from None
    log.info("report PDFs: PAdES digital signature on, certificate %s (%s, valid to %s)",
             path, signer.subject_cn, f"{signer.not_after:%Y-%m-%d}")
    return signer
