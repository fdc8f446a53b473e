// Mouse and touch on a viewport: the active tool on the primary button, pan on the
// middle button, zoom on the right button, wheel to scroll (Ctrl+wheel to zoom).

export const TOOLS = Object.freeze(['wl', 'zoom', 'pan', 'scroll', 'length', 'angle', 'ellipse', 'rectangle']);
const MEASURE_TOOLS = new Set(['length', 'angle', 'ellipse', 'rectangle']);
const HANDLE_RADIUS = 7;
const WHEEL_STEP = 50;

export class ViewportInteraction {
  /**
   * @param {import('./viewport.js').Viewport} viewport
   * @param {{activeTool:()=>string, onActivate:(vp)=>void, onToggleMaximize:(vp)=>void}} hooks
   */
  constructor(viewport, hooks) {
    this.viewport = viewport;
    this.hooks = hooks;
    this.drag = null;
    this.wheelAccumulator = 0;
    const el = viewport.element;
    el.addEventListener('pointerdown', (e) => this.onPointerDown(e));
    el.addEventListener('pointermove', (e) => this.onPointerMove(e));
    el.addEventListener('pointerup', (e) => this.onPointerUp(e));
    el.addEventListener('pointercancel', () => this.cancel());
    el.addEventListener('pointerleave', () => viewport.setHover(null));
    el.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
    el.addEventListener('contextmenu', (e) => e.preventDefault());
    // The middle button pans; stop the browser's autoscroll from taking it.
    el.addEventListener('mousedown', (e) => {
      if (e.button === 1) e.preventDefault();
    });
    el.addEventListener('dblclick', (e) => {
      if (!MEASURE_TOOLS.has(this.hooks.activeTool())) this.hooks.onToggleMaximize(viewport);
      e.preventDefault();
    });
  }

  local(event) {
    const rect = this.viewport.element.getBoundingClientRect();
    return { x: event.clientX - rect.left, y: event.clientY - rect.top };
  }

  onPointerDown(event) {
    const vp = this.viewport;
    this.hooks.onActivate(vp);
    if (!vp.series || event.target === vp.slider) return;
    event.preventDefault();
    vp.element.focus({ preventScroll: true });
    const at = this.local(event);
    const tool = event.button === 1 ? 'pan' : event.button === 2 ? 'zoom' : this.hooks.activeTool();
    // Second click of an angle: place the third point.
    if (vp.draft?.kind === 'angle' && vp.draft.stage === 2) {
      vp.draft.points[2] = vp.canvasToImage(at);
      const done = vp.draft;
      vp.draft = null;
      delete done.stage;
      vp.addMeasurement(done);
      return;
    }
    vp.element.setPointerCapture(event.pointerId);
    const start = { at, last: at, tool, center: vp.view.center, width: vp.view.width, scroll: 0 };
    if (MEASURE_TOOLS.has(tool)) {
      const hit = this.hitHandle(at);
      if (hit) {
        this.drag = { ...start, edit: hit };
        return;
      }
      const p = vp.canvasToImage(at);
      vp.draft = { kind: tool, points: [p, { ...p }], stage: 1 };
      vp.requestRender();
    }
    this.drag = start;
  }

  hitHandle(at) {
    const vp = this.viewport;
    for (const measurement of vp.currentMeasurements()) {
      for (let i = 0; i < measurement.points.length; i++) {
        const p = vp.imageToCanvas(measurement.points[i]);
        if (Math.hypot(p.x - at.x, p.y - at.y) <= HANDLE_RADIUS) return { measurement, pointIndex: i };
      }
    }
    return null;
  }

  onPointerMove(event) {
    const vp = this.viewport;
    if (!vp.series) return;
    const at = this.local(event);
    vp.setHover(vp.canvasToImage(at));
    if (vp.draft?.kind === 'angle' && vp.draft.stage === 2) {
      vp.draft.points[2] = vp.canvasToImage(at);
      vp.evaluate(vp.draft);
      vp.requestRender();
      return;
    }
    const drag = this.drag;
    if (!drag) return;
    const dx = at.x - drag.last.x;
    const dy = at.y - drag.last.y;
    drag.last = at;
    if (drag.edit) {
      drag.edit.measurement.points[drag.edit.pointIndex] = vp.canvasToImage(at);
      vp.evaluate(drag.edit.measurement);
      vp.requestRender();
      return;
    }
    switch (drag.tool) {
      case 'wl': {
        // Sensitivity follows the value range: ~1 HU per pixel for a 12-bit CT.
        const sensitivity = Math.max(0.25, vp.valueRange() / 1024);
        const totalX = at.x - drag.at.x;
        const totalY = at.y - drag.at.y;
        vp.setWindow(drag.center + totalY * sensitivity, drag.width + totalX * sensitivity);
        break;
      }
      case 'zoom':
        vp.zoomBy(Math.exp(-dy / 150), drag.at);
        break;
      case 'pan':
        vp.panBy(dx, dy);
        break;
      case 'scroll': {
        const step = Math.max(2, Math.min(12, vp.element.clientHeight / Math.max(1, vp.stack.length)));
        drag.scroll += dy;
        const images = Math.trunc(drag.scroll / step);
        if (images) {
          drag.scroll -= images * step;
          vp.scrollBy(images);
        }
        break;
      }
      default:
        if (vp.draft) {
          vp.draft.points[1] = vp.canvasToImage(at);
          if (vp.draft.kind !== 'angle') vp.evaluate(vp.draft);
          vp.requestRender();
        }
    }
  }

  onPointerUp(event) {
    const vp = this.viewport;
    const drag = this.drag;
    this.drag = null;
    if (vp.element.hasPointerCapture?.(event.pointerId)) vp.element.releasePointerCapture(event.pointerId);
    if (!drag) return;
    if (drag.edit) {
      const result = vp.evaluate(drag.edit.measurement);
      vp.lastMeasurement = result;
      vp.hooks.onMeasurement(result);
      vp.requestRender();
      return;
    }
    const draft = vp.draft;
    if (!draft || !MEASURE_TOOLS.has(drag.tool)) return;
    const at = this.local(event);
    draft.points[1] = vp.canvasToImage(at);
    const moved = Math.hypot(at.x - drag.at.x, at.y - drag.at.y);
    if (moved < 3) {
      vp.draft = null;
      vp.requestRender();
      return;
    }
    if (draft.kind === 'angle') {
      draft.stage = 2;
      draft.points[2] = { ...draft.points[1] };
      vp.requestRender();
      return;
    }
    vp.draft = null;
    delete draft.stage;
    vp.addMeasurement(draft);
  }

  onWheel(event) {
    const vp = this.viewport;
    if (!vp.series) return;
    event.preventDefault();
    this.hooks.onActivate(vp);
    if (event.ctrlKey || event.metaKey) {
      vp.zoomBy(Math.exp(-event.deltaY / 500), this.local(event));
      return;
    }
    // One image per wheel notch; small trackpad deltas add up to a notch.
    const delta = event.deltaMode === 0 ? event.deltaY : event.deltaY * WHEEL_STEP;
    if (Math.abs(delta) >= WHEEL_STEP) {
      this.wheelAccumulator = 0;
      vp.scrollBy(Math.sign(delta));
      return;
    }
    this.wheelAccumulator += delta;
    if (Math.abs(this.wheelAccumulator) >= WHEEL_STEP) {
      vp.scrollBy(Math.sign(this.wheelAccumulator));
      this.wheelAccumulator = 0;
    }
  }

  /** Esc: drop the measurement being drawn. Returns true when there was one. */
  cancel() {
    const vp = this.viewport;
    this.drag = null;
    if (!vp.draft) return false;
    vp.draft = null;
    vp.requestRender();
    return true;
  }
}
