// Viewer URLs an EMR can open: IHE Invoke Image Display (IID) parameters
// (requestType=STUDY|PATIENT, studyUID, accessionNumber, patientID, lowerDateTime,
// upperDateTime, mostRecentResults, modalitiesInStudy) and the simple forms
// ?StudyInstanceUID=, ?AccessionNumber=, ?PatientID=.

import { TAG, text } from './dicomjson.js';

function param(params, name) {
  const wanted = name.toLowerCase();
  for (const [key, value] of params) {
    if (key.toLowerCase() === wanted && value.trim() !== '') return value.trim();
  }
  return '';
}

function list(value) {
  return value
    .split(/[,\\]/)
    .map((item) => item.trim())
    .filter(Boolean);
}

/** ISO 8601 date or date-time ("2024-01-01T00:00:00", "2024-01-01", "20240101") → DICOM DA. */
export function isoToDicomDate(value) {
  const m = /^(\d{4})-?(\d{2})-?(\d{2})/.exec(value ?? '');
  return m ? `${m[1]}${m[2]}${m[3]}` : '';
}

/**
 * HL7 CX patient identifier ("123^^^HOSP" or "123^^^&1.2.3&ISO") → PatientID and
 * IssuerOfPatientID (the assigning authority's namespace, when it has one).
 */
export function parsePatientIdentifier(value) {
  const [id, , , authority = ''] = value.split('^');
  const namespace = authority.split('&')[0];
  return { patientId: id, issuer: namespace || '' };
}

/**
 * What the page URL asks for.
 * @param {URLSearchParams} params
 * @returns {{kind:'study', studyUid:string}
 *   | {kind:'studies', studyUids:string[], accessionNumbers:string[]}
 *   | {kind:'patient', patientId:string, issuer:string, dateFrom:string, dateTo:string,
 *      mostRecent:number, modalities:string[]}
 *   | {kind:'list'}}
 */
export function parseViewerLink(params) {
  const requestType = param(params, 'requestType').toUpperCase();
  if (requestType === 'STUDY' || (!requestType && (param(params, 'studyUID') || param(params, 'AccessionNumber')))) {
    const studyUids = list(param(params, 'studyUID') || param(params, 'StudyInstanceUID'));
    const accessionNumbers = list(param(params, 'accessionNumber'));
    if (studyUids.length === 1 && !accessionNumbers.length) return { kind: 'study', studyUid: studyUids[0] };
    return { kind: 'studies', studyUids, accessionNumbers };
  }
  if (requestType === 'PATIENT' || (!requestType && param(params, 'PatientID'))) {
    const { patientId, issuer } = parsePatientIdentifier(param(params, 'patientID'));
    const mostRecent = Number.parseInt(param(params, 'mostRecentResults'), 10);
    return {
      kind: 'patient',
      patientId,
      issuer,
      dateFrom: isoToDicomDate(param(params, 'lowerDateTime')),
      dateTo: isoToDicomDate(param(params, 'upperDateTime')),
      mostRecent: Number.isFinite(mostRecent) && mostRecent > 0 ? mostRecent : 0,
      modalities: list(param(params, 'modalitiesInStudy')).map((m) => m.toUpperCase()),
    };
  }
  const studyUid = param(params, 'StudyInstanceUID');
  if (studyUid) return { kind: 'study', studyUid };
  return { kind: 'list' };
}

/** The viewer URL that opens one study, keeping a `server=` override. */
export function studyLink(currentHref, studyUid) {
  const current = new URL(currentHref);
  const next = new URL(current.pathname, current.href);
  const server = current.searchParams.get('server');
  if (server) next.searchParams.set('server', server);
  next.searchParams.set('StudyInstanceUID', studyUid);
  return next.href;
}

/** The plain study-list URL, keeping a `server=` override. */
export function listLink(currentHref) {
  const current = new URL(currentHref);
  const next = new URL(current.pathname, current.href);
  const server = current.searchParams.get('server');
  if (server) next.searchParams.set('server', server);
  return next.href;
}

/**
 * Studies named by a STUDY link: one search per UID and per accession number, merged.
 * @param {{studyUids:string[], accessionNumbers:string[]}} link
 * @param {(query: Object<string,string>) => Promise<object[]>} search a QIDO-RS study search
 */
export async function resolveLinkedStudies(link, search) {
  const queries = [
    ...link.studyUids.map((uid) => ({ StudyInstanceUID: uid })),
    ...link.accessionNumbers.map((accession) => ({ AccessionNumber: accession })),
  ];
  const results = await Promise.all(queries.map(search));
  const byUid = new Map();
  for (const study of results.flat()) byUid.set(text(study, TAG.StudyInstanceUID), study);
  return [...byUid.values()];
}
