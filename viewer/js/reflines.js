// Reference lines: where the slice shown in one viewport cuts the image shown in another,
// when both lie in one Frame of Reference at different orientations (an axial series and
// a coronal one of the same CT, or the MPR planes). The geometry is pure functions of
// the DICOM Image Plane module (PS3.3 §C.7.6.2); ReferenceLines draws them over each
// viewport and redraws the others when one scrolls.

import { TAG, numbers, text } from './dicomjson.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const COLOR = '#4fc3f7';
// Planes closer to parallel than this (|cos| of the angle between normals) cut nowhere
// useful: an axial series beside another axial series gets no line.
const PARALLEL_COSINE = 0.985;

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const minus = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];

/**
 * The plane of one image, or null without complete geometry.
 * `row` is the direction of increasing column index, `column` of increasing row index
 * (ImageOrientationPatient's two triplets); `origin` the centre of the first pixel.
 */
export function imagePlane(meta) {
  const orientation = numbers(meta, TAG.ImageOrientationPatient);
  const origin = numbers(meta, TAG.ImagePositionPatient);
  const spacing = numbers(meta, TAG.PixelSpacing);
  const rows = numbers(meta, TAG.Rows)[0];
  const columns = numbers(meta, TAG.Columns)[0];
  const frameOfReference = text(meta, TAG.FrameOfReferenceUID);
  if (orientation.length !== 6 || origin.length !== 3 || spacing.length !== 2 || !rows || !columns || !frameOfReference) return null;
  const row = orientation.slice(0, 3);
  const column = orientation.slice(3, 6);
  return { frameOfReference, origin, row, column, normal: cross(row, column), spacing: { row: spacing[0], column: spacing[1] }, rows, columns };
}

/**
 * Where `source`'s plane cuts the image of `target`, in `target` image coordinates
 * (x = column, y = row, pixel c covering [c, c+1), as the viewport's), clipped to the
 * image; null when the planes are in other Frames of Reference, (nearly) parallel, or
 * meet outside the image.
 * @returns {{a:{x:number,y:number}, b:{x:number,y:number}}|null}
 */
export function referenceLine(target, source) {
  if (!target || !source || target.frameOfReference !== source.frameOfReference) return null;
  if (Math.abs(dot(target.normal, source.normal)) > PARALLEL_COSINE) return null;
  // A target point at image coordinates (x, y) is
  //   origin + (x - 0.5) * spacing.column * row + (y - 0.5) * spacing.row * column;
  // it lies on the source plane when normal_s · (point - origin_s) = 0: ax + by + c = 0.
  const a = target.spacing.column * dot(source.normal, target.row);
  const b = target.spacing.row * dot(source.normal, target.column);
  const c = dot(source.normal, minus(target.origin, source.origin)) - 0.5 * a - 0.5 * b;
  return clipLine(a, b, c, target.columns, target.rows);
}

/** The segment of the line ax + by + c = 0 inside [0, width] x [0, height], or null. */
export function clipLine(a, b, c, width, height) {
  const points = [];
  const add = (x, y) => {
    const inside = x >= -1e-6 && x <= width + 1e-6 && y >= -1e-6 && y <= height + 1e-6;
    if (inside && !points.some((p) => Math.abs(p.x - x) < 1e-6 && Math.abs(p.y - y) < 1e-6)) points.push({ x, y });
  };
  if (Math.abs(b) > 1e-12) {
    add(0, -c / b);
    add(width, -(a * width + c) / b);
  }
  if (Math.abs(a) > 1e-12) {
    add(-c / a, 0);
    add(-(b * height + c) / a, height);
  }
  if (points.length < 2) return null;
  // Of the corner-touching duplicates, the two farthest apart are the segment.
  let best = [points[0], points[1]];
  let longest = -1;
  for (let i = 0; i < points.length; i++) {
    for (let j = i + 1; j < points.length; j++) {
      const d = (points[i].x - points[j].x) ** 2 + (points[i].y - points[j].y) ** 2;
      if (d > longest) {
        longest = d;
        best = [points[i], points[j]];
      }
    }
  }
  return longest > 1e-9 ? { a: best[0], b: best[1] } : null;
}

/** Draws, in every visible viewport, the lines of the slices the other visible ones show. */
export class ReferenceLines {
  /** @param {{viewports: object[], visibleViewports: () => object[]}} viewer */
  constructor(viewer) {
    this.viewer = viewer;
    this.enabled = true;
  }

  /** After `viewport` rendered its image and measurements: add its reference lines. */
  draw(viewport) {
    viewport.svg.querySelector('[data-testid=reference-lines]')?.remove();
    if (!this.enabled || !viewport.entry) return;
    const target = imagePlane(viewport.entry.meta);
    if (!target) return;
    const group = document.createElementNS(SVG_NS, 'g');
    group.setAttribute('data-testid', 'reference-lines');
    for (const other of this.viewer.visibleViewports()) {
      if (other === viewport || !other.entry) continue;
      const line = referenceLine(target, imagePlane(other.entry.meta));
      if (!line) continue;
      const p = viewport.imageToCanvas(line.a);
      const q = viewport.imageToCanvas(line.b);
      const el = document.createElementNS(SVG_NS, 'line');
      const attributes = {
        x1: p.x, y1: p.y, x2: q.x, y2: q.y, stroke: COLOR, 'stroke-width': 1, 'stroke-dasharray': '6 4',
        'data-testid': 'reference-line', 'data-source-viewport': other.index,
        // Image coordinates of the ends, for tests and anyone reading the DOM.
        'data-image-line': [line.a.x, line.a.y, line.b.x, line.b.y].map((v) => v.toFixed(3)).join(','),
      };
      for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
      group.append(el);
    }
    if (group.childElementCount) viewport.svg.append(group);
  }

  /** `viewport` shows another slice (or series): the others redraw their lines. */
  changed(viewport) {
    for (const other of this.viewer.visibleViewports()) {
      if (other !== viewport && other.series) other.requestRender();
    }
  }
}
