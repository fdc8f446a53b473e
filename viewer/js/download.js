// "Download study (ZIP)": retrieve the study's Part-10 instances with WADO-RS and pack
// them into a ZIP in the browser, one folder per series.

import { TAG, number, text } from './dicomjson.js';
import { buildZip } from './zip.js';

const latin1 = new TextDecoder('latin1');

/**
 * Media Storage SOP Instance UID (0002,0003) from a Part-10 file's meta information
 * (PS3.10 §7.1: 128-byte preamble, "DICM", then group 0002 in Explicit VR Little Endian).
 * @returns {string} the UID, or '' when the bytes are not a Part-10 file
 */
export function part10SopInstanceUid(bytes) {
  if (bytes.length < 132 || latin1.decode(bytes.subarray(128, 132)) !== 'DICM') return '';
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 132;
  while (offset + 8 <= bytes.length) {
    const group = view.getUint16(offset, true);
    const element = view.getUint16(offset + 2, true);
    if (group !== 0x0002) break;
    const vr = latin1.decode(bytes.subarray(offset + 4, offset + 6));
    let length;
    let valueOffset;
    if (['OB', 'OW', 'OF', 'SQ', 'UT', 'UN'].includes(vr)) {
      length = view.getUint32(offset + 8, true);
      valueOffset = offset + 12;
    } else {
      length = view.getUint16(offset + 6, true);
      valueOffset = offset + 8;
    }
    if (element === 0x0003) return latin1.decode(bytes.subarray(valueOffset, valueOffset + length)).replace(/[\0\s]+$/, '');
    offset = valueOffset + length;
  }
  return '';
}

function safeName(value) {
  return (
    String(value ?? '')
      .normalize('NFD')
      .replace(/[\u0300-\u036f]/g, '')
      .replace(/đ/g, 'd')
      .replace(/Đ/g, 'D')
      .replace(/[^A-Za-z0-9._-]+/g, '_')
      .replace(/^_+|_+$/g, '')
      .slice(0, 60) || 'x'
  );
}

/** The ZIP's file name: PatientID_StudyDate_Accession.zip, ASCII only. */
export function zipFileName(study) {
  return `${[text(study, TAG.PatientID), text(study, TAG.StudyDate), text(study, TAG.AccessionNumber)].filter(Boolean).map(safeName).join('_') || 'study'}.zip`;
}

/**
 * Folder/file names for each instance: S003_CT_Chest/IM00012.dcm.
 * @param {Map<string, {seriesMeta: object[]}>} seriesMetadata series UID → instance metadata
 * @returns {Map<string, string>} SOP Instance UID → path inside the ZIP
 */
export function instancePaths(seriesMetadata) {
  const paths = new Map();
  for (const instances of seriesMetadata.values()) {
    for (const meta of instances) {
      const seriesNumber = String(number(meta, TAG.SeriesNumber, 0)).padStart(3, '0');
      const folder = [`S${seriesNumber}`, safeName(text(meta, TAG.Modality)), text(meta, TAG.SeriesDescription) ? safeName(text(meta, TAG.SeriesDescription)) : '']
        .filter(Boolean)
        .join('_');
      const instanceNumber = number(meta, TAG.InstanceNumber);
      const file = instanceNumber !== undefined ? `IM${String(instanceNumber).padStart(5, '0')}` : safeName(text(meta, TAG.SOPInstanceUID));
      paths.set(text(meta, TAG.SOPInstanceUID), `${folder}/${file}`);
    }
  }
  return paths;
}

/**
 * Fetch and pack the whole study.
 * @param {import('./dicomweb.js').DicomWebClient} client
 * @param {string} studyUid
 * @param {Map<string, object[]>} seriesMetadata series UID → instance metadata (names the files)
 * @param {(stage:'download'|'zip', bytes:number) => void} onProgress
 * @returns {Promise<{blob: Blob, count: number}>}
 */
export async function studyZip(client, studyUid, seriesMetadata, onProgress) {
  const paths = instancePaths(seriesMetadata);
  let files;
  try {
    const parts = await client.retrieveStudy(studyUid, (bytes) => onProgress('download', bytes));
    files = parts.map((part) => ({ uid: part10SopInstanceUid(part.body), data: part.body }));
  } catch (error) {
    if (!seriesMetadata.size) throw error;
    // Study-level retrieve refused: fetch the instances one by one.
    files = await instancesOneByOne(client, studyUid, seriesMetadata, onProgress);
  }
  onProgress('zip', 0);
  const used = new Set();
  const entries = files.map((file, i) => {
    let name = paths.get(file.uid) ?? `other/${safeName(file.uid || `instance_${i + 1}`)}`;
    while (used.has(name)) name = `${name}_${i + 1}`;
    used.add(name);
    return { name: `${name}.dcm`, data: file.data };
  });
  return { blob: buildZip(entries), count: entries.length };
}

async function instancesOneByOne(client, studyUid, seriesMetadata, onProgress) {
  const jobs = [];
  for (const [seriesUid, instances] of seriesMetadata) {
    for (const meta of instances) jobs.push({ seriesUid, uid: text(meta, TAG.SOPInstanceUID) });
  }
  const files = [];
  let bytes = 0;
  let next = 0;
  async function worker() {
    while (next < jobs.length) {
      const job = jobs[next++];
      const data = await client.retrieveInstance(studyUid, job.seriesUid, job.uid);
      bytes += data.byteLength;
      onProgress('download', bytes);
      files.push({ uid: job.uid, data });
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()]);
  return files;
}
