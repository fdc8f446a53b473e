// Cine: play a viewport's stack (frames of a multi-frame instance or the images of a
// series) in a loop at a frame rate, waiting for frames that are not loaded yet.

import { ignoreAbort } from './frames.js';

export class Cine {
  /** @param {import('./viewport.js').Viewport} viewport */
  constructor(viewport) {
    this.viewport = viewport;
    this.playing = false;
    this.fps = 10;
    this.shown = 0;
    this.last = 0;
    this.handle = 0;
  }

  start() {
    const vp = this.viewport;
    if (!vp.series || vp.stack.length < 2 || this.playing) return;
    this.playing = true;
    this.last = performance.now();
    const step = (now) => {
      if (!this.playing) return;
      if (now - this.last >= 1000 / this.fps) {
        const next = (vp.imageIndex + 1) % vp.stack.length;
        if (vp.frames.get(next)) {
          vp.setIndex(next);
          this.shown++;
          this.last = now;
        } else {
          // Hold the current frame until the next one arrives rather than skip it.
          vp.frames.load(next).catch(ignoreAbort);
        }
      }
      this.handle = requestAnimationFrame(step);
    };
    this.handle = requestAnimationFrame(step);
    vp.hooks.onChange(vp);
  }

  stop() {
    if (!this.playing) return;
    this.playing = false;
    cancelAnimationFrame(this.handle);
    this.viewport.hooks.onChange(this.viewport);
  }

  toggle() {
    if (this.playing) this.stop();
    else this.start();
  }
}
