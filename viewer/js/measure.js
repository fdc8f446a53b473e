// Measurement geometry in image coordinates (x = column, y = row, continuous: pixel
// (c, r) covers [c, c+1) × [r, r+1)) converted to millimetres with the pixel spacing
// (stack.pixelSpacing: which attribute calibrates, always named in the label).

import { TAG, text } from './dicomjson.js';
import { formatNumber, t } from './i18n.js';

/**
 * Length between two image points.
 * @param {{x:number,y:number}} a
 * @param {{x:number,y:number}} b
 * @param {{row:number, column:number}} spacing mm between rows / between columns
 * @returns {number} mm (or px when the spacing is 1/1)
 */
export function lengthMm(a, b, spacing) {
  const dx = (b.x - a.x) * spacing.column;
  const dy = (b.y - a.y) * spacing.row;
  return Math.hypot(dx, dy);
}

/** Angle ABC at vertex B, in degrees (0–180), measured in physical space. */
export function angleDegrees(a, b, c, spacing) {
  const v1x = (a.x - b.x) * spacing.column;
  const v1y = (a.y - b.y) * spacing.row;
  const v2x = (c.x - b.x) * spacing.column;
  const v2y = (c.y - b.y) * spacing.row;
  const n = Math.hypot(v1x, v1y) * Math.hypot(v2x, v2y);
  if (n === 0) return 0;
  const cos = Math.min(1, Math.max(-1, (v1x * v2x + v1y * v2y) / n));
  return (Math.acos(cos) * 180) / Math.PI;
}

/**
 * Statistics of modality values inside an ellipse or rectangle.
 * @param {object} frame decoded grayscale frame (pixels.js)
 * @param {'ellipse'|'rectangle'} shape
 * @param {{x:number,y:number}} a one corner of the bounding box
 * @param {{x:number,y:number}} b the opposite corner
 * @param {{row:number, column:number}} spacing
 * @returns {{count:number, mean:number, sd:number, min:number, max:number, area:number}|null}
 *   area in mm² (px² without spacing); null for colour frames. SD is the population SD.
 */
export function roiStatistics(frame, shape, a, b, spacing) {
  const x0 = Math.min(a.x, b.x);
  const x1 = Math.max(a.x, b.x);
  const y0 = Math.min(a.y, b.y);
  const y1 = Math.max(a.y, b.y);
  const rx = (x1 - x0) / 2;
  const ry = (y1 - y0) / 2;
  const cx = x0 + rx;
  const cy = y0 + ry;
  const area = shape === 'ellipse' ? Math.PI * rx * spacing.column * ry * spacing.row : (x1 - x0) * spacing.column * (y1 - y0) * spacing.row;
  if (!frame || frame.color) return { count: 0, mean: NaN, sd: NaN, min: NaN, max: NaN, area };
  const { slope, intercept } = frame.format;
  let count = 0;
  let sum = 0;
  let sumSquares = 0;
  let min = Infinity;
  let max = -Infinity;
  const cStart = Math.max(0, Math.floor(x0));
  const cEnd = Math.min(frame.columns - 1, Math.ceil(x1));
  const rStart = Math.max(0, Math.floor(y0));
  const rEnd = Math.min(frame.rows - 1, Math.ceil(y1));
  for (let r = rStart; r <= rEnd; r++) {
    const py = r + 0.5;
    for (let c = cStart; c <= cEnd; c++) {
      const px = c + 0.5;
      // A pixel belongs to the ROI when its centre does.
      if (shape === 'ellipse') {
        if (rx === 0 || ry === 0) continue;
        const nx = (px - cx) / rx;
        const ny = (py - cy) / ry;
        if (nx * nx + ny * ny > 1) continue;
      } else if (px < x0 || px > x1 || py < y0 || py > y1) {
        continue;
      }
      const v = frame.data[r * frame.columns + c] * slope + intercept;
      count++;
      sum += v;
      sumSquares += v * v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  if (!count) return { count, mean: NaN, sd: NaN, min: NaN, max: NaN, area };
  const mean = sum / count;
  const sd = Math.sqrt(Math.max(0, sumSquares / count - mean * mean));
  return { count, mean, sd, min, max, area };
}

/**
 * Numbers and label of a measurement.
 * @param {{kind:'length'|'angle'|'ellipse'|'rectangle', points:{x:number,y:number}[]}} measurement
 * @param {{row:number, column:number, kind:string, factor?:number}} spacing from stack.pixelSpacing()
 * @param {object|null} frame decoded frame for ROI statistics (null: area only)
 * @param {object} meta instance metadata (Modality, RescaleType decide the HU unit)
 * @returns {{kind:string, value:number, unit:string, calibration:string, source:string, text:string}}
 *   `source` names where the spacing came from, shown with every length and area;
 *   `value` is mm (or px) for a length, degrees for an angle, the mean for an ROI.
 */
export function measurementResult(measurement, spacing, frame, meta) {
  // Never mm without a calibration: pixels say px (issue #14, "measurements that are right").
  const unit = spacing.kind === 'none' ? 'px' : 'mm';
  const source = t(`measure.source.${spacing.kind}`, { f: formatNumber(spacing.factor ?? 1, 3) });
  const note = ` ${source}`;
  const [a, b, c] = measurement.points;
  if (measurement.kind === 'length') {
    const value = lengthMm(a, b, spacing);
    return { kind: 'length', value, unit, calibration: spacing.kind, source, text: `${formatNumber(value, 1)} ${unit}${note}` };
  }
  if (measurement.kind === 'angle') {
    const value = c ? angleDegrees(a, b, c, spacing) : 0;
    return { kind: 'angle', value, unit: '°', calibration: spacing.kind, source, text: `${formatNumber(value, 1)}°` };
  }
  const stats = roiStatistics(frame, measurement.kind, a, b, spacing);
  // Hounsfield units: CT modality values (PS3.3 §C.8.2.1.1.3) or an explicit RescaleType.
  const valueUnit = text(meta, TAG.Modality).toUpperCase() === 'CT' || text(meta, TAG.RescaleType).toUpperCase() === 'HU' ? 'HU' : '';
  const areaUnit = unit === 'mm' ? 'mm²' : 'px²';
  const lines = [];
  if (stats.count) {
    lines.push(`${t('measure.mean')}: ${formatNumber(stats.mean, 1)} ${valueUnit}`.trim());
    lines.push(`${t('measure.sd')}: ${formatNumber(stats.sd, 1)} ${valueUnit}`.trim());
  }
  lines.push(`${t('measure.area')}: ${formatNumber(stats.area, 1)} ${areaUnit}${note}`);
  return {
    kind: measurement.kind,
    value: stats.mean,
    unit: valueUnit,
    mean: stats.mean,
    sd: stats.sd,
    min: stats.min,
    max: stats.max,
    count: stats.count,
    area: stats.area,
    areaUnit,
    calibration: spacing.kind,
    source,
    text: lines.join('\n'),
  };
}
