// One viewport: a series stack shown on a canvas with its own window/level, zoom, pan,
// rotation, flips, measurements, cine and corner overlays.

import { ignoreAbort } from './frames.js';
import { TAG, numbers, text } from './dicomjson.js';
import { COLOR_IDENTITY_WINDOW, renderFrame } from './lut.js';
import { measurementResult } from './measure.js';
import { Cine } from './cine.js';
import { viewportPng } from './viewportpng.js';
import { modalityRange, modalityValueAt } from './pixels.js';
import { overlayLines } from './overlay.js';
import { createViewportDom, fillCorners } from './viewportdom.js';
import { drawAnnotations } from './annotations.js';
import { cineFrameRate, pixelSpacing } from './stack.js';
import { formatNumber, t } from './i18n.js';

function defaultView() {
  return { center: 0, width: 1, voiFunction: 'LINEAR', invert: false, scale: 1, panX: 0, panY: 0, rotation: 0, flipH: false, flipV: false, fit: true };
}

/** Window from the header (first WindowCenter/WindowWidth values, PS3.3 §C.11.2.1.2). */
export function headerWindow(meta) {
  const centers = numbers(meta, TAG.WindowCenter);
  const widths = numbers(meta, TAG.WindowWidth);
  if (!centers.length || !widths.length || widths[0] <= 0) return null;
  return { center: centers[0], width: widths[0] };
}

/** Run `callback` after the browser has painted the next frame. */
function afterNextPaint(callback) {
  requestAnimationFrame(() => setTimeout(callback, 0));
}

export class Viewport {
  /**
   * @param {HTMLElement} element empty container
   * @param {number} index position in the layout
   * @param {{onChange:(vp:Viewport)=>void, onMeasurement:(m:object)=>void}} hooks
   */
  constructor(element, index, hooks) {
    this.element = element;
    this.index = index;
    this.hooks = hooks;
    this.series = null;
    this.frames = null;
    this.imageIndex = 0;
    this.view = defaultView();
    this.windowSource = 'none';
    this.measurements = new Map();
    this.draft = null;
    this.hoverPoint = null;
    this.cine = new Cine(this);
    this.lastMeasurement = null;
    this.renderPending = false;
    this.rendered = { key: '', imageData: null };
    this.unsubscribe = null;
    this.buildDom();
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.element);
  }

  buildDom() {
    Object.assign(this, createViewportDom(this.element, this.index));
    this.message.textContent = t('viewer.empty');
    this.slider.addEventListener('input', () => this.setIndex(Number(this.slider.value) - 1));
    this.offscreen = document.createElement('canvas');
  }

  // ---- series and stack position ------------------------------------------------------

  /**
   * Show a series.
   * @param {{seriesUid:string, stack:object[], frames:import('./frames.js').SeriesFrames}} series
   */
  setSeries(series, startIndex = 0) {
    this.stopCine();
    this.unsubscribe?.();
    this.series = series;
    this.frames = series.frames;
    this.measurements = new Map();
    this.draft = null;
    this.view = defaultView();
    this.rendered = { key: '', imageData: null };
    this.windowSource = 'none';
    const entry = series.stack[0];
    this.element.dataset.seriesUid = series.seriesUid;
    if (entry) {
      const fromHeader = entry.format.samplesPerPixel === 3 ? { ...COLOR_IDENTITY_WINDOW } : headerWindow(entry.meta);
      if (fromHeader) {
        this.view.center = fromHeader.center;
        this.view.width = fromHeader.width;
        this.windowSource = 'header';
      }
      const voi = text(entry.meta, TAG.VOILUTFunction, 'LINEAR').trim().toUpperCase();
      this.view.voiFunction = ['LINEAR', 'LINEAR_EXACT', 'SIGMOID'].includes(voi) ? voi : 'LINEAR';
      this.cine.fps = cineFrameRate(entry.meta);
    }
    this.unsubscribe = this.frames.subscribe((type, detail) => {
      if (type === 'frame' && detail === this.imageIndex) this.requestRender();
      if (type === 'progress') this.updateProgress();
    });
    this.slider.max = String(Math.max(1, series.stack.length));
    this.slider.hidden = series.stack.length <= 1;
    this.imageIndex = Math.min(Math.max(0, startIndex), Math.max(0, series.stack.length - 1));
    // Background prefetch starts once the first image has been drawn: its responses are
    // decoded on this thread and would otherwise delay that first paint.
    this.frames.load(this.imageIndex).then(() => afterNextPaint(() => this.frames.prefetchAround(this.imageIndex)), ignoreAbort);
    this.updateProgress();
    this.fit();
    this.hooks.onChange(this);
  }

  /** Show nothing (a new study is opening). */
  clear() {
    this.stopCine();
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.series = null;
    this.frames = null;
    this.imageIndex = 0;
    this.view = defaultView();
    this.measurements = new Map();
    this.draft = null;
    this.lastMeasurement = null;
    this.rendered = { key: '', imageData: null };
    delete this.element.dataset.seriesUid;
    this.slider.hidden = true;
    this.progress.hidden = true;
    this.render();
  }

  get stack() {
    return this.series?.stack ?? [];
  }

  get entry() {
    return this.stack[this.imageIndex];
  }

  /** The cached value for the image shown ({kind:'pixels'|'bitmap'|'error'}) or undefined. */
  get current() {
    return this.frames?.get(this.imageIndex);
  }

  setIndex(index) {
    if (!this.series || !this.stack.length) return;
    const clamped = Math.min(Math.max(0, Math.round(index)), this.stack.length - 1);
    if (clamped === this.imageIndex) return;
    this.imageIndex = clamped;
    this.draft = null;
    this.frames.prefetchAround(clamped);
    if (!this.frames.get(clamped)) this.frames.load(clamped);
    this.requestRender();
    this.hooks.onChange(this);
  }

  scrollBy(delta) {
    this.setIndex(this.imageIndex + delta);
  }

  // ---- geometry -----------------------------------------------------------------------

  imageSize() {
    const value = this.current;
    if (value?.kind === 'pixels') return { columns: value.frame.columns, rows: value.frame.rows };
    const format = this.entry?.format;
    return format ? { columns: format.columns, rows: format.rows } : { columns: 1, rows: 1 };
  }

  /** Spacing of the current image; `points` pick the ultrasound region (stack.js). */
  spacing(points = undefined) {
    return this.entry ? pixelSpacing(this.entry.meta, points) : { row: 1, column: 1, kind: 'none' };
  }

  /** Height of a pixel relative to its width on screen (non-square pixels). */
  aspect() {
    const spacing = this.spacing();
    // Ultrasound regions calibrate measurements, not the display of the whole image.
    if (spacing.kind !== 'none' && spacing.kind !== 'region') return spacing.row / spacing.column;
    const ratio = this.entry ? numbers(this.entry.meta, TAG.PixelAspectRatio) : [];
    return ratio.length === 2 && ratio[0] > 0 && ratio[1] > 0 ? ratio[0] / ratio[1] : 1;
  }

  cssSize() {
    return { width: this.element.clientWidth || 1, height: this.element.clientHeight || 1 };
  }

  /** Image coordinates → viewport CSS pixels. */
  matrix() {
    const { width, height } = this.cssSize();
    const { columns, rows } = this.imageSize();
    const v = this.view;
    return new DOMMatrix()
      .translateSelf(width / 2 + v.panX, height / 2 + v.panY)
      .scaleSelf(v.flipH ? -1 : 1, v.flipV ? -1 : 1)
      .rotateSelf(v.rotation * 90)
      .scaleSelf(v.scale, v.scale * this.aspect())
      .translateSelf(-columns / 2, -rows / 2);
  }

  imageToCanvas(point) {
    const p = this.matrix().transformPoint(new DOMPoint(point.x, point.y));
    return { x: p.x, y: p.y };
  }

  canvasToImage(point) {
    const p = this.matrix().inverse().transformPoint(new DOMPoint(point.x, point.y));
    return { x: p.x, y: p.y };
  }

  /** Page client coordinates of an image point (for tests and tools). */
  imageToClient(point) {
    const rect = this.element.getBoundingClientRect();
    const p = this.imageToCanvas(point);
    return { x: rect.left + p.x, y: rect.top + p.y };
  }

  clientToImage(clientX, clientY) {
    const rect = this.element.getBoundingClientRect();
    return this.canvasToImage({ x: clientX - rect.left, y: clientY - rect.top });
  }

  fitScale() {
    const { width, height } = this.cssSize();
    const { columns, rows } = this.imageSize();
    const imageHeight = rows * this.aspect();
    const [w, h] = this.view.rotation % 2 ? [imageHeight, columns] : [columns, imageHeight];
    return Math.min(width / w, height / h);
  }

  // ---- display settings ---------------------------------------------------------------

  fit() {
    this.view.fit = true;
    this.view.scale = this.fitScale();
    this.view.panX = 0;
    this.view.panY = 0;
    this.changed();
  }

  oneToOne() {
    this.view.fit = false;
    this.view.scale = 1;
    this.view.panX = 0;
    this.view.panY = 0;
    this.changed();
  }

  /** Multiply the scale, keeping the viewport point `anchor` (CSS px) over the same image point. */
  zoomBy(factor, anchor) {
    const target = Math.min(50, Math.max(0.02, this.view.scale * factor));
    this.zoomTo(target, anchor);
  }

  zoomTo(scale, anchor) {
    const { width, height } = this.cssSize();
    const at = anchor ?? { x: width / 2, y: height / 2 };
    const imagePoint = this.canvasToImage(at);
    this.view.scale = scale;
    this.view.fit = false;
    const moved = this.imageToCanvas(imagePoint);
    this.view.panX += at.x - moved.x;
    this.view.panY += at.y - moved.y;
    this.changed();
  }

  panBy(dx, dy) {
    this.view.panX += dx;
    this.view.panY += dy;
    this.view.fit = false;
    this.changed();
  }

  setWindow(center, width) {
    this.view.center = center;
    this.view.width = Math.max(1, width);
    this.windowSource = 'user';
    this.changed();
  }

  /** Back to the header window (or the computed one). */
  defaultWindow() {
    const entry = this.entry;
    if (!entry) return;
    const fromHeader = entry.format.samplesPerPixel === 3 ? { ...COLOR_IDENTITY_WINDOW } : headerWindow(entry.meta);
    if (fromHeader) {
      this.view.center = fromHeader.center;
      this.view.width = fromHeader.width;
      this.windowSource = 'header';
    } else {
      this.windowSource = 'none';
      this.ensureWindow();
    }
    this.changed();
  }

  toggleInvert() {
    this.view.invert = !this.view.invert;
    this.changed();
  }

  rotate() {
    this.view.rotation = (this.view.rotation + 1) % 4;
    if (this.view.fit) this.view.scale = this.fitScale();
    this.changed();
  }

  flip(horizontal) {
    if (horizontal) this.view.flipH = !this.view.flipH;
    else this.view.flipV = !this.view.flipV;
    this.changed();
  }

  reset() {
    const keep = { voiFunction: this.view.voiFunction };
    this.view = { ...defaultView(), ...keep };
    this.defaultWindow();
    this.fit();
  }

  changed() {
    this.requestRender();
    this.hooks.onChange(this);
  }

  // A window from the modality values when the header has none.
  ensureWindow() {
    if (this.windowSource !== 'none') return;
    const value = this.current;
    if (value?.kind !== 'pixels') return;
    if (value.frame.color) {
      Object.assign(this.view, COLOR_IDENTITY_WINDOW);
    } else {
      const { min, max } = modalityRange(value.frame);
      this.view.center = (min + max) / 2;
      this.view.width = Math.max(1, max - min);
    }
    this.windowSource = 'computed';
  }

  /** Modality value range of the current frame (for W/L drag sensitivity). */
  valueRange() {
    const value = this.current;
    if (value?.kind !== 'pixels' || value.frame.color) return 256;
    const { min, max } = modalityRange(value.frame);
    return Math.max(1, max - min);
  }

  // ---- measurements -------------------------------------------------------------------

  currentMeasurements() {
    const key = this.entry?.key;
    if (!key) return [];
    if (!this.measurements.has(key)) this.measurements.set(key, []);
    return this.measurements.get(key);
  }

  addMeasurement(measurement) {
    this.evaluate(measurement);
    this.currentMeasurements().push(measurement);
    this.lastMeasurement = measurement.result;
    this.hooks.onMeasurement(measurement.result);
    this.requestRender();
  }

  clearMeasurements() {
    if (this.entry) this.measurements.set(this.entry.key, []);
    this.draft = null;
    this.requestRender();
  }

  /** Compute the label and numbers of a measurement on the current image. */
  evaluate(measurement) {
    const value = this.current;
    measurement.result = measurementResult(measurement, this.spacing(measurement.points), value?.kind === 'pixels' ? value.frame : null, this.entry.meta);
    return measurement.result;
  }

  // ---- cine (cine.js) ------------------------------------------------------------------

  startCine() {
    this.cine.start();
  }

  stopCine() {
    this.cine.stop();
  }

  toggleCine() {
    this.cine.toggle();
  }

  setFps(fps) {
    this.cine.fps = Math.min(120, Math.max(1, Number(fps) || 10));
  }

  // ---- rendering ----------------------------------------------------------------------

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const { width, height } = this.cssSize();
    this.canvas.width = Math.max(1, Math.round(width * dpr));
    this.canvas.height = Math.max(1, Math.round(height * dpr));
    this.svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    if (this.view.fit && this.series) this.view.scale = this.fitScale();
    this.render();
  }

  requestRender() {
    if (this.renderPending) return;
    this.renderPending = true;
    requestAnimationFrame(() => {
      this.renderPending = false;
      this.render();
    });
  }

  /** Draw now (tests and export call this to skip the animation-frame wait). */
  render() {
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.series) {
      this.showMessage(t('viewer.empty'));
      this.updateOverlay();
      return;
    }
    const value = this.current;
    if (!value) {
      this.showMessage(t('viewer.loading'));
    } else if (value.kind === 'error') {
      this.showMessage(`${t('viewer.frameFailed')}: ${value.error}`);
    } else {
      this.showMessage('');
      this.ensureWindow();
      const source = value.kind === 'pixels' ? this.paintPixels(value.frame) : value.bitmap;
      const dpr = window.devicePixelRatio || 1;
      if (this.view.fit) this.view.scale = this.fitScale();
      const m = new DOMMatrix().scaleSelf(dpr, dpr).multiplySelf(this.matrix());
      ctx.setTransform(m);
      // Bilinear when enlarging (what reading workstations do), mipmapped when shrinking so
      // a large image does not alias; raw pixels when zoomed in far. Chromium's 'high'
      // (bicubic) cost 15-25 ms a draw on a 2-core PC, most of a scroll step.
      ctx.imageSmoothingEnabled = this.view.scale < 3;
      ctx.imageSmoothingQuality = this.view.scale < 1 ? 'medium' : 'low';
      if (value.kind === 'bitmap' && this.view.invert) ctx.filter = 'invert(1)';
      ctx.drawImage(source, 0, 0);
      ctx.filter = 'none';
      ctx.setTransform(1, 0, 0, 1, 0, 0);
    }
    drawAnnotations(this.svg, this.currentMeasurements(), this.draft, (p) => this.imageToCanvas(p));
    this.hooks.onRender?.(this); // reference lines (reflines.js)
    this.slider.value = String(this.imageIndex + 1);
    this.updateOverlay();
  }

  paintPixels(frame) {
    const v = this.view;
    const key = `${this.imageIndex}|${v.center}|${v.width}|${v.voiFunction}|${v.invert}|${frame.rows}x${frame.columns}`;
    if (this.rendered.key !== key || this.rendered.frame !== frame) {
      if (!this.rendered.imageData || this.rendered.imageData.width !== frame.columns || this.rendered.imageData.height !== frame.rows) {
        this.rendered.imageData = new ImageData(frame.columns, frame.rows);
        this.offscreen.width = frame.columns;
        this.offscreen.height = frame.rows;
      }
      renderFrame(frame, v, this.rendered.imageData.data);
      this.offscreen.getContext('2d').putImageData(this.rendered.imageData, 0, 0);
      this.rendered.key = key;
      this.rendered.frame = frame;
    }
    return this.offscreen;
  }

  showMessage(message) {
    this.message.textContent = message;
    this.message.hidden = !message;
  }

  updateProgress() {
    if (!this.frames) {
      this.progress.hidden = true;
      return;
    }
    const { loadedCount, total } = this.frames;
    this.progress.hidden = loadedCount >= total;
    this.progress.querySelector('.bar').style.width = `${(100 * loadedCount) / Math.max(1, total)}%`;
    this.progress.querySelector('span').textContent = t('viewer.loadProgress', { loaded: loadedCount, total });
  }

  setHover(imagePoint) {
    this.hoverPoint = imagePoint;
    this.updateOverlay();
  }

  pixelValueText() {
    const value = this.current;
    if (!this.hoverPoint || value?.kind !== 'pixels' || value.frame.color) return '';
    const v = modalityValueAt(value.frame, Math.floor(this.hoverPoint.x), Math.floor(this.hoverPoint.y));
    if (v === undefined) return '';
    return formatNumber(v, Number.isInteger(v) ? 0 : 2);
  }

  overlayState() {
    const entry = this.entry;
    return {
      index: this.imageIndex,
      total: this.stack.length,
      frameNumber: entry?.frameNumber ?? 1,
      numberOfFrames: entry?.format.numberOfFrames ?? 1,
      center: this.view.center,
      width: this.view.width,
      scale: this.view.scale,
      calibration: this.spacing().kind,
      pixelValue: this.pixelValueText(),
      renderedFallback: this.current?.kind === 'bitmap',
    };
  }

  updateOverlay() {
    const entry = this.entry;
    fillCorners(this.corners, entry ? overlayLines(entry.meta, this.overlayState()) : null);
  }

  /** The viewport as a PNG: image, measurements and corner text, at screen resolution. */
  exportPng() {
    this.render();
    return viewportPng(this.canvas, this.svg, this.corners, this.cssSize());
  }

  /** Read-only facts for tests and the toolbar. */
  snapshot() {
    return Object.freeze({
      index: this.index,
      seriesInstanceUID: this.series?.seriesUid ?? null,
      imageIndex: this.imageIndex,
      imageNumber: this.series ? this.imageIndex + 1 : 0,
      imageCount: this.stack.length,
      frameNumber: this.entry?.frameNumber ?? 0,
      sopInstanceUID: this.entry?.sopInstanceUid ?? null,
      windowCenter: this.view.center,
      windowWidth: this.view.width,
      invert: this.view.invert,
      scale: this.view.scale,
      rotation: this.view.rotation * 90,
      flipH: this.view.flipH,
      flipV: this.view.flipV,
      loadedFrameCount: this.frames?.loadedCount ?? 0,
      totalFrameCount: this.frames?.total ?? 0,
      currentImageKind: this.current?.kind ?? null,
      cinePlaying: this.cine.playing,
      cineFps: this.cine.fps,
      cineFramesShown: this.cine.shown,
      measurementCount: this.entry ? this.currentMeasurements().length : 0,
      lastMeasurement: this.lastMeasurement ? { ...this.lastMeasurement } : null,
      calibration: this.spacing().kind,
    });
  }

  dispose() {
    this.stopCine();
    this.unsubscribe?.();
    this.resizeObserver.disconnect();
  }
}
