// A series as the viewer scrolls it: its instances in display order, each frame of a
// multi-frame instance one entry, with what the viewer needs to know about each.

import { TAG, number, numbers, text } from './dicomjson.js';
import { pixelFormat } from './pixels.js';

function cross(a, b) {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

/** Position along the slice normal (PS3.3 §C.7.6.2.1.1), or undefined without geometry. */
export function slicePosition(meta) {
  const orientation = numbers(meta, TAG.ImageOrientationPatient);
  const position = numbers(meta, TAG.ImagePositionPatient);
  if (orientation.length !== 6 || position.length !== 3) return undefined;
  const normal = cross(orientation.slice(0, 3), orientation.slice(3, 6));
  return normal[0] * position[0] + normal[1] * position[1] + normal[2] * position[2];
}

/** Sort by InstanceNumber, then by position along the normal, then by SOP Instance UID. */
export function sortInstances(instances) {
  const keyed = instances.map((meta) => ({
    meta,
    instanceNumber: number(meta, TAG.InstanceNumber, Number.POSITIVE_INFINITY),
    position: slicePosition(meta) ?? 0,
    uid: text(meta, TAG.SOPInstanceUID),
  }));
  keyed.sort(
    (a, b) =>
      // Infinity − Infinity is NaN, which falls through like 0.
      a.instanceNumber - b.instanceNumber ||
      a.position - b.position ||
      a.uid.localeCompare(b.uid),
  );
  return keyed.map((k) => k.meta);
}

/**
 * Millimetres per pixel for measurements.
 * @returns {{row:number, column:number, kind:'patient'|'imager'|'none'}}
 *   row = spacing between rows (vertical), column = between columns (horizontal), PS3.3 §10.7.1.3.
 */
export function pixelSpacing(meta) {
  const patient = numbers(meta, TAG.PixelSpacing);
  if (patient.length === 2 && patient[0] > 0 && patient[1] > 0) return { row: patient[0], column: patient[1], kind: 'patient' };
  const imager = numbers(meta, TAG.ImagerPixelSpacing);
  if (imager.length === 2 && imager[0] > 0 && imager[1] > 0) return { row: imager[0], column: imager[1], kind: 'imager' };
  return { row: 1, column: 1, kind: 'none' };
}

/** Frames per second for cine: FrameTime (ms), CineRate, RecommendedDisplayFrameRate, else 10. */
export function cineFrameRate(meta) {
  const frameTime = number(meta, TAG.FrameTime);
  if (frameTime > 0) return Math.min(120, Math.max(1, Math.round(1000 / frameTime)));
  const rate = number(meta, TAG.CineRate) ?? number(meta, TAG.RecommendedDisplayFrameRate);
  if (rate > 0) return Math.min(120, Math.round(rate));
  return 10;
}

/**
 * One entry per displayable frame.
 * @param {object[]} instances series metadata (any order)
 * @returns {{sopInstanceUid:string, frameNumber:number, meta:object, format:object, key:string}[]}
 */
export function buildStack(instances) {
  const entries = [];
  for (const meta of sortInstances(instances)) {
    const format = pixelFormat(meta);
    // Instances without pixels (SR, presentation states, …) have no Rows.
    if (!format.rows || !format.columns) continue;
    const sopInstanceUid = text(meta, TAG.SOPInstanceUID);
    for (let frameNumber = 1; frameNumber <= format.numberOfFrames; frameNumber++) {
      entries.push({ sopInstanceUid, frameNumber, meta, format, key: `${sopInstanceUid}:${frameNumber}` });
    }
  }
  return entries;
}
