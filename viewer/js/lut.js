// Grayscale pipeline in the browser (PS3.4 §N.2): stored value → Modality LUT
// (slope/intercept) → VOI LUT (window centre/width) → presentation (MONOCHROME1 or the
// user's invert) → 8-bit display value. Colour images get the same window per channel.

/**
 * VOI window function (PS3.3 §C.11.2.1.2 and §C.11.2.1.3), output range 0..255.
 * @param {number} x modality value
 * @param {number} center window centre (modality units)
 * @param {number} width window width (modality units)
 * @param {string} fn 'LINEAR' | 'LINEAR_EXACT' | 'SIGMOID'
 */
export function voiValue(x, center, width, fn = 'LINEAR') {
  if (fn === 'SIGMOID') {
    return 255 / (1 + Math.exp((-4 * (x - center)) / width));
  }
  if (fn === 'LINEAR_EXACT') {
    const w = Math.max(width, Number.EPSILON);
    if (x <= center - w / 2) return 0;
    if (x > center + w / 2) return 255;
    return ((x - center) / w + 0.5) * 255;
  }
  // LINEAR: width ≥ 1, and the -0.5 / (w-1) terms of §C.11.2.1.2.1.
  const w = Math.max(width, 1);
  if (x <= center - 0.5 - (w - 1) / 2) return 0;
  if (x > center - 0.5 + (w - 1) / 2) return 255;
  if (w === 1) return 255;
  return ((x - (center - 0.5)) / (w - 1) + 0.5) * 255;
}

/**
 * Lookup table from stored value to display value for stored values minStored..maxStored.
 * @param {{minStored:number, maxStored:number, slope:number, intercept:number,
 *   center:number, width:number, voiFunction?:string, inverted?:boolean}} p
 * @returns {Uint8ClampedArray} index = stored − minStored
 */
export function buildLut(p) {
  const size = p.maxStored - p.minStored + 1;
  const lut = new Uint8ClampedArray(size);
  for (let i = 0; i < size; i++) {
    const modality = (p.minStored + i) * p.slope + p.intercept;
    const v = voiValue(modality, p.center, p.width, p.voiFunction);
    lut[i] = p.inverted ? 255 - v : v;
  }
  return lut;
}

const MAX_LUT_SIZE = 1 << 20;

/**
 * Render a decoded frame into RGBA pixels.
 * @param {object} frame from decodeFrame()
 * @param {{center:number, width:number, voiFunction?:string, invert?:boolean}} view
 *   `invert` is the user's toggle; MONOCHROME1 is inverted on top of it (PS3.3 §C.7.6.3.1.2).
 * @param {Uint8ClampedArray} rgba output, 4 × rows × columns
 */
export function renderFrame(frame, view, rgba) {
  const monochrome1 = frame.format.photometric === 'MONOCHROME1';
  const inverted = Boolean(view.invert) !== monochrome1;
  if (frame.color) {
    renderColor(frame, view, rgba);
    return;
  }
  const { data } = frame;
  const count = frame.rows * frame.columns;
  const range = frame.maxStored - frame.minStored + 1;
  if (range <= MAX_LUT_SIZE) {
    const lut = buildLut({
      minStored: frame.minStored,
      maxStored: frame.maxStored,
      slope: frame.format.slope,
      intercept: frame.format.intercept,
      center: view.center,
      width: view.width,
      voiFunction: view.voiFunction,
      inverted,
    });
    const offset = frame.minStored;
    for (let i = 0, j = 0; i < count; i++, j += 4) {
      const v = lut[data[i] - offset];
      rgba[j] = v;
      rgba[j + 1] = v;
      rgba[j + 2] = v;
      rgba[j + 3] = 255;
    }
    return;
  }
  const { slope, intercept } = frame.format;
  for (let i = 0, j = 0; i < count; i++, j += 4) {
    let v = voiValue(data[i] * slope + intercept, view.center, view.width, view.voiFunction);
    if (inverted) v = 255 - v;
    rgba[j] = v;
    rgba[j + 1] = v;
    rgba[j + 2] = v;
    rgba[j + 3] = 255;
  }
}

function renderColor(frame, view, rgba) {
  const lut = buildLut({
    minStored: 0,
    maxStored: 255,
    slope: 1,
    intercept: 0,
    center: view.center,
    width: view.width,
    voiFunction: view.voiFunction,
    inverted: Boolean(view.invert),
  });
  const { data } = frame;
  const count = frame.rows * frame.columns;
  for (let i = 0, s = 0, j = 0; i < count; i++, s += 3, j += 4) {
    rgba[j] = lut[data[s]];
    rgba[j + 1] = lut[data[s + 1]];
    rgba[j + 2] = lut[data[s + 2]];
    rgba[j + 3] = 255;
  }
}

/** The identity window for 8-bit colour: centre 128, width 256 maps 0..255 onto itself. */
export const COLOR_IDENTITY_WINDOW = Object.freeze({ center: 128, width: 256 });

/**
 * Common CT windows (centre/width in HU), as widely taught in radiology:
 * brain 40/80, subdural 75/215, lung −600/1500, mediastinum 50/350, abdomen 60/400, bone 300/1500.
 */
export const CT_PRESETS = Object.freeze([
  { id: 'brain', center: 40, width: 80 },
  { id: 'subdural', center: 75, width: 215 },
  { id: 'lung', center: -600, width: 1500 },
  { id: 'mediastinum', center: 50, width: 350 },
  { id: 'abdomen', center: 60, width: 400 },
  { id: 'bone', center: 300, width: 1500 },
  // keys 7-9 (keyboard.js): liver 30/150, stroke 40/40, temporal bone 600/2800
  { id: 'liver', center: 30, width: 150 },
  { id: 'stroke', center: 40, width: 40 },
  { id: 'temporal', center: 600, width: 2800 },
]);
