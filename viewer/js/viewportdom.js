// The elements of one viewport: image canvas, measurement SVG, four overlay corners,
// loading message and progress bar, stack slider.

const SVG_NS = 'http://www.w3.org/2000/svg';
const CORNERS = [
  ['topLeft', 'top-left'],
  ['topRight', 'top-right'],
  ['bottomLeft', 'bottom-left'],
  ['bottomRight', 'bottom-right'],
];

function div(className, testid) {
  const el = document.createElement('div');
  el.className = className;
  el.dataset.testid = testid;
  return el;
}

/**
 * Fill `element` (emptied first) with the viewport's parts.
 * @returns {{canvas: HTMLCanvasElement, svg: SVGSVGElement, corners: Object<string, HTMLElement>,
 *   message: HTMLElement, progress: HTMLElement, slider: HTMLInputElement}}
 */
export function createViewportDom(element, index) {
  element.classList.add('viewport');
  element.dataset.testid = 'viewport';
  element.dataset.index = String(index);
  element.tabIndex = -1;
  element.replaceChildren();
  const canvas = document.createElement('canvas');
  canvas.dataset.testid = 'viewport-canvas';
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.classList.add('annotations');
  svg.dataset.testid = 'viewport-annotations';
  element.append(canvas, svg);
  const corners = {};
  for (const [key, cls] of CORNERS) {
    corners[key] = div(`corner ${cls}`, `overlay-${cls}`);
    element.append(corners[key]);
  }
  const message = div('viewport-message', 'viewport-message');
  const progress = div('load-progress', 'load-progress');
  progress.append(document.createElement('div'), document.createElement('span'));
  progress.firstChild.className = 'bar';
  progress.hidden = true;
  const slider = document.createElement('input');
  Object.assign(slider, { type: 'range', min: '1', max: '1', value: '1', className: 'stack-slider', hidden: true });
  slider.dataset.testid = 'viewport-slider';
  // Dragging the slider is not a tool drag on the image.
  slider.addEventListener('pointerdown', (event) => event.stopPropagation());
  element.append(message, progress, slider);
  return { canvas, svg, corners, message, progress, slider };
}

/**
 * Show overlay lines in the corners; lines with a testid get it as data-testid.
 * @param {Object<string, HTMLElement>} corners
 * @param {Object<string, {text:string, testid?:string}[]>|null} lines null empties them
 */
export function fillCorners(corners, lines) {
  for (const [key] of CORNERS) {
    const items = (lines?.[key] ?? []).filter((l) => l.text);
    corners[key].replaceChildren(
      ...items.map((l) => {
        const el = document.createElement('div');
        el.textContent = l.text;
        if (l.testid) el.dataset.testid = l.testid;
        return el;
      }),
    );
  }
}
