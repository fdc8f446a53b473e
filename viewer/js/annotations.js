// Measurements drawn as SVG over the canvas. Styles are attributes, not CSS, so the SVG
// can be serialized into the exported PNG as it looks on screen.

const SVG_NS = 'http://www.w3.org/2000/svg';
const COLOR = '#ffd23c';
const DRAFT_COLOR = '#7fdfff';

function node(name, attributes) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  return el;
}

function label(textValue, x, y, color) {
  const text = node('text', {
    x,
    y,
    fill: color,
    stroke: '#000',
    'stroke-width': 3,
    'paint-order': 'stroke',
    'font-family': 'system-ui, sans-serif',
    'font-size': 13,
    'data-testid': 'measurement-label',
  });
  textValue.split('\n').forEach((lineText, i) => {
    const tspan = node('tspan', { x, dy: i === 0 ? 0 : 15 });
    tspan.textContent = lineText;
    text.append(tspan);
  });
  return text;
}

function handle(p, color) {
  return node('circle', { cx: p.x, cy: p.y, r: 3.5, fill: 'none', stroke: color, 'stroke-width': 1.5 });
}

function drawOne(svg, measurement, toCanvas, color) {
  const points = measurement.points.map(toCanvas);
  const group = node('g', { 'data-kind': measurement.kind });
  const stroke = { stroke: color, 'stroke-width': 1.5, fill: 'none' };
  const text = measurement.result?.text ?? '';
  if (measurement.kind === 'length') {
    const [a, b] = points;
    group.append(node('line', { x1: a.x, y1: a.y, x2: b.x, y2: b.y, ...stroke }), handle(a, color), handle(b, color));
    if (text) group.append(label(text, b.x + 8, b.y - 6, color));
  } else if (measurement.kind === 'angle') {
    const [a, b, c] = points;
    group.append(node('line', { x1: a.x, y1: a.y, x2: b.x, y2: b.y, ...stroke }), handle(a, color), handle(b, color));
    if (c) group.append(node('line', { x1: b.x, y1: b.y, x2: c.x, y2: c.y, ...stroke }), handle(c, color));
    if (text && c) group.append(label(text, b.x + 10, b.y + 16, color));
  } else {
    const [a, b] = points;
    // Rotation is in quarter turns, so an image-aligned box stays screen-aligned.
    const x0 = Math.min(a.x, b.x);
    const y0 = Math.min(a.y, b.y);
    const w = Math.abs(b.x - a.x);
    const h = Math.abs(b.y - a.y);
    if (measurement.kind === 'ellipse') group.append(node('ellipse', { cx: x0 + w / 2, cy: y0 + h / 2, rx: w / 2, ry: h / 2, ...stroke }));
    else group.append(node('rect', { x: x0, y: y0, width: w, height: h, ...stroke }));
    group.append(handle(a, color), handle(b, color));
    if (text) group.append(label(text, x0 + w + 8, y0 + 12, color));
  }
  svg.append(group);
}

/**
 * Redraw every measurement of the image shown, and the one being drawn.
 * @param {SVGSVGElement} svg
 * @param {{kind:string, points:{x:number,y:number}[], result?:{text:string}}[]} measurements
 * @param {object|null} draft measurement in progress
 * @param {(p:{x:number,y:number}) => {x:number,y:number}} toCanvas image → viewport CSS px
 */
export function drawAnnotations(svg, measurements, draft, toCanvas) {
  svg.replaceChildren();
  for (const measurement of measurements) drawOne(svg, measurement, toCanvas, COLOR);
  if (draft) drawOne(svg, draft, toCanvas, DRAFT_COLOR);
}
