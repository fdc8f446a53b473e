// A series as the viewer scrolls it: its instances in display order, each frame of a
// multi-frame instance one entry, with what the viewer needs to know about each.

import { TAG, number, numbers, text, values } from './dicomjson.js';
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

/** Physical units code 3 = cm (PS3.3 §C.8.5.5.1.15). */
const CENTIMETRE = 3;

function regionSpacing(region) {
  // Both directions in cm and positive deltas: a spatial region (PS3.3 §C.8.5.5.1).
  if (number(region, TAG.PhysicalUnitsXDirection) !== CENTIMETRE || number(region, TAG.PhysicalUnitsYDirection) !== CENTIMETRE) return null;
  const dx = Math.abs(number(region, TAG.PhysicalDeltaX, 0));
  const dy = Math.abs(number(region, TAG.PhysicalDeltaY, 0));
  return dx > 0 && dy > 0 ? { row: dy * 10, column: dx * 10 } : null;
}

function regionHolds(region, point) {
  // Region bounds are pixel indices, inclusive; a point is continuous (pixel c covers [c, c+1)).
  const x0 = number(region, TAG.RegionLocationMinX0, 0);
  const y0 = number(region, TAG.RegionLocationMinY0, 0);
  const x1 = number(region, TAG.RegionLocationMaxX1, -1) + 1;
  const y1 = number(region, TAG.RegionLocationMaxY1, -1) + 1;
  return point.x >= x0 && point.x <= x1 && point.y >= y0 && point.y <= y1;
}

/**
 * Millimetres per pixel for measurements, and where the number comes from.
 *
 * In order: PixelSpacing (calibrated to the patient, PS3.3 §10.7.1.3); ImagerPixelSpacing
 * divided by EstimatedRadiographicMagnificationFactor (PS3.3 §C.8.11.7: the spacing at the
 * detector corrected to the isocentre); ImagerPixelSpacing alone (the detector plane,
 * uncalibrated); an ultrasound region holding every point of the measurement with physical
 * deltas in cm (PS3.3 §C.8.5.5.1); otherwise pixels, never labelled mm.
 * @param {object} meta instance metadata
 * @param {{x:number,y:number}[]} [points] the measurement's points (ultrasound regions);
 *   without points, the first spatial region describes the image.
 * @returns {{row:number, column:number, kind:'patient'|'magnified'|'imager'|'region'|'none', factor?:number}}
 *   row = spacing between rows (vertical), column = between columns (horizontal).
 */
export function pixelSpacing(meta, points = undefined) {
  const patient = numbers(meta, TAG.PixelSpacing);
  if (patient.length === 2 && patient[0] > 0 && patient[1] > 0) return { row: patient[0], column: patient[1], kind: 'patient' };
  const imager = numbers(meta, TAG.ImagerPixelSpacing);
  if (imager.length === 2 && imager[0] > 0 && imager[1] > 0) {
    const factor = number(meta, TAG.EstimatedRadiographicMagnificationFactor, 0);
    if (factor > 0) return { row: imager[0] / factor, column: imager[1] / factor, kind: 'magnified', factor };
    return { row: imager[0], column: imager[1], kind: 'imager' };
  }
  for (const region of values(meta, TAG.SequenceOfUltrasoundRegions)) {
    const spacing = regionSpacing(region);
    if (!spacing) continue;
    if (points && !points.every((p) => regionHolds(region, p))) continue;
    return { ...spacing, kind: 'region' };
  }
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
