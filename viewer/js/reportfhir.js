// The FHIR side of the report panel (report.js): requests to {server}/fhir and the
// DiagnosticReport as minipacs maps it (fhir/diagnostic_report.py; docs/emr-integration.md):
// findings in an extension, the corrected version named in an identifier, key images as
// media identified by SOP Instance UID.

export const FINDINGS_URL = 'urn:minipacs:fhir:StructureDefinition/report-findings';
const AMENDS_SYSTEM = 'urn:minipacs:report-amends';
// The statuses of a report still being written ('registered' is minipacs's draft).
export const EDITABLE = ['registered', 'preliminary'];

export function versionOf(resource) {
  return Number(resource?.meta?.versionId ?? 0);
}

export function findingsOf(resource) {
  return (resource?.extension ?? []).find((e) => e.url === FINDINGS_URL)?.valueString ?? '';
}

export function keyImagesOf(resource) {
  return (resource?.media ?? []).map((m) => String(m.link?.identifier?.value ?? '').replace(/^urn:oid:/, '')).filter(Boolean);
}

export function amendsOf(resource) {
  return (resource?.identifier ?? []).find((i) => i.system === AMENDS_SYSTEM)?.value ?? null;
}

/**
 * A DiagnosticReport as the panel writes it. FHIR strings may not be empty: empty text
 * is left out.
 * @param {{status: string, studyUid: string, id?: string, orderId?: string, findings: string, conclusion: string, keyImages: string[]}} report
 */
export function diagnosticReport({ status, studyUid, id, orderId, findings, conclusion, keyImages }) {
  const body = {
    resourceType: 'DiagnosticReport',
    status,
    code: { coding: [{ system: 'http://loinc.org', code: '18748-4', display: 'Diagnostic imaging study' }] },
    imagingStudy: [{ reference: `ImagingStudy/${studyUid}` }],
  };
  if (id) body.id = id;
  if (orderId) body.basedOn = [{ reference: `ServiceRequest/${orderId}` }];
  if (findings) body.extension = [{ url: FINDINGS_URL, valueString: findings }];
  if (conclusion) body.conclusion = conclusion;
  if (keyImages.length) body.media = keyImages.map((sop) => ({ comment: 'key image', link: { identifier: { system: 'urn:dicom:uid', value: `urn:oid:${sop}` } } }));
  return body;
}

/**
 * A FHIR request with the viewer's session; the resource (JSON) answered, or an Error
 * with `status` and the OperationOutcome's diagnostics.
 */
export async function fhirRequest(base, path, { method = 'GET', body, version, keepalive = false } = {}) {
  const headers = { Accept: 'application/fhir+json' };
  if (body) headers['Content-Type'] = 'application/fhir+json';
  if (version) headers['If-Match'] = `W/"${version}"`;
  const response = await fetch(`${base}/${path}`, {
    method,
    headers,
    credentials: 'same-origin',
    keepalive,
    body: body ? JSON.stringify(body) : undefined,
  });
  let json = null;
  try {
    json = await response.json();
  } catch {
    // A refusal without a body: the status says enough.
  }
  if (!response.ok) {
    const detail = json?.issue?.map((i) => i.diagnostics).filter(Boolean).join('; ') ?? '';
    const error = new Error(detail || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return json;
}
