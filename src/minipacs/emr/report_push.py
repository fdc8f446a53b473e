"""Signed reports on the hospital's FHIR server (issue #14), pushed with their study.

Signing or amending a report stores its Encapsulated PDF and SR in the study
(`Archive.ingest`), which is a change in the feed: the study becomes due again in the FHIR
push (`fhir_push.py`), so reports ride the push's durable cursor, lease and retries and a
report is never missed while the EMR's server is down. After the study's Patient +
ImagingStudy transaction, each final or amended report of the study is sent as a
DiagnosticReport in a second transaction: a conditional create on its identifier
(`urn:minipacs:report|<id>`), or an update of the one the server has. An amendment is its
own DiagnosticReport (status amended, identifier `urn:minipacs:report-amends|<earlier
id>`); the earlier one stays on the server with status final, as it stays here.
`presentedForm` is the signed PDF as the URL of the Encapsulated PDF's WADO-RS rendered
resource, which answers application/pdf (MINIPACS_PUBLIC_URL), fetched by the EMR with its
own credentials.

Every report sent is an audited disclosure (`report-disclosure`, the EMR's URL named)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from minipacs.access.principal import Principal
from minipacs.archive import Archive
from minipacs.emr.fhir_client import FhirServer
from minipacs.emr.push_bundle import locations
from minipacs.fhir.diagnostic_report import REPORT_SYSTEM, diagnostic_report_resource
from minipacs.reports.service import AMENDED, FINAL, Reports

log = logging.getLogger(__name__)


def report_identifier(report_id: int) -> str:
    return f"{REPORT_SYSTEM}|{report_id}"


def report_entry(resource: DiagnosticReport, patient_at: str, study_at: str,
                 found_id: str | None) -> BundleEntry:
    """One DiagnosticReport entry: pointed at the server's Patient and ImagingStudy,
    created when absent (conditional on its identifier), else updated in place."""
    body: dict[str, Any] = resource.model_dump(mode="json", exclude_none=True)
    body.pop("meta", None)
    ours = str(body.pop("id"))
    if patient_at:
        body["subject"] = {"reference": patient_at}
    else:
        body.pop("subject", None)
    if study_at:
        body["imagingStudy"] = [{"reference": study_at}]
    body.pop("basedOn", None)  # our ServiceRequest ids are not the server's
    if found_id is None:
        request = BundleEntryRequest(
            method="POST", url="DiagnosticReport",
            ifNoneExist="identifier=" + quote(report_identifier(int(ours)), safe=":|"))
    else:
        body["id"] = found_id
        request = BundleEntryRequest(method="PUT", url=f"DiagnosticReport/{found_id}")
    return BundleEntry(resource=DiagnosticReport(**body), request=request)


def push_reports(archive: Archive, principal: Principal, server: FhirServer,
                 study_instance_uid: str, patient_at: str, study_at: str,
                 public_base: str) -> list[str]:
    """Send the study's signed reports; the server's `DiagnosticReport/id`s. Raises
    `FhirPushFailed` (the study's push is then retried) when the server refuses."""
    reports = Reports(archive).search(study_uids=(study_instance_uid,),
                                      statuses=(FINAL, AMENDED), limit=1000,
                                      principal=principal)
    if not reports:
        return []
    entries = []
    for report in sorted(reports, key=lambda r: r.id):
        found = server.find_one("DiagnosticReport", report_identifier(report.id))
        entries.append(report_entry(diagnostic_report_resource(report, public_base),
                                    patient_at, study_at,
                                    found.id if found is not None else None))
    bundle = Bundle(type="transaction", entry=entries)
    where = locations(server.transaction(bundle.model_dump(mode="json", exclude_none=True)))
    for report, at in zip(sorted(reports, key=lambda r: r.id), where, strict=False):
        archive.audit("report-disclosure", principal.actor, report.patient_id,
                      study_instance_uid, f"report {report.id} ({report.status}) sent "
                      f"to the FHIR server {server.base_url} as {at}",
                      role=principal.role.value, source=principal.source)
    log.info("FHIR push of %d reports of study %s: %s", len(entries), study_instance_uid,
             ", ".join(where))
    return where
