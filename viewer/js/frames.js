// Decoded frames of a series, kept in memory so window/level and scrolling never wait on
// the network, and fetched in the background nearest-first with a few requests at a time.

import { decodeFrame } from './pixels.js';

// Answers meaning "this server cannot do that request", as opposed to a passing failure:
// after one of them the series stops asking for it and goes straight to the fallback.
const UNSUPPORTED_STATUSES = new Set([400, 404, 405, 406, 415, 501]);

/** For a `.catch` of `SeriesFrames.load`: its one rejection is an abort (the series was
 * closed, or the page is being left, which aborts every fetch); anything else is a bug
 * and stays loud. */
export function ignoreAbort(error) {
  if (error?.name !== 'AbortError') throw error;
}

function shortError(error) {
  return error?.status ? `HTTP ${error.status}` : String(error?.message ?? error);
}

/** Runs at most `limit` requests at once: urgent ones first, then background prefetch. */
export class RequestScheduler {
  constructor(limit = 4) {
    this.limit = limit;
    this.active = 0;
    this.urgent = [];
    this.sources = [];
    this.turn = 0;
  }

  /** Run `task` (returning a promise) before any background work. */
  runUrgent(task) {
    return new Promise((resolve, reject) => {
      this.urgent.push(() => task().then(resolve, reject));
      this.pump();
    });
  }

  /** A source offers background tasks through `nextTask()` (null when it has none). */
  addSource(source) {
    if (!this.sources.includes(source)) this.sources.push(source);
    this.pump();
  }

  removeSource(source) {
    this.sources = this.sources.filter((s) => s !== source);
  }

  nextBackgroundTask() {
    for (let i = 0; i < this.sources.length; i++) {
      const source = this.sources[(this.turn + i) % this.sources.length];
      const task = source.nextTask();
      if (task) {
        this.turn = (this.turn + i + 1) % this.sources.length;
        return task;
      }
    }
    return null;
  }

  pump() {
    while (this.active < this.limit) {
      const task = this.urgent.shift() ?? this.nextBackgroundTask();
      if (!task) return;
      this.active++;
      Promise.resolve()
        .then(task)
        .catch(() => {
          // Failures are recorded by the task's owner; the scheduler only keeps going.
        })
        .finally(() => {
          this.active--;
          this.pump();
        });
    }
  }
}

// Keep at most this many bytes of decoded pixels per series; beyond it only a window of
// frames around the one shown is kept (a 1,000-slice CT needs 500 MB).
const SERIES_BUDGET_BYTES = 384 * 1024 * 1024;

/**
 * Frames of one series.
 * Each cached value is {kind:'pixels', frame} (decoded, windowed in the browser),
 * {kind:'bitmap', bitmap} (server-rendered fallback) or {kind:'error', error}.
 */
export class SeriesFrames {
  /**
   * @param {import('./dicomweb.js').DicomWebClient} client
   * @param {RequestScheduler} scheduler
   * @param {string} studyUid
   * @param {string} seriesUid
   * @param {ReturnType<import('./stack.js').buildStack>} stack
   */
  constructor(client, scheduler, studyUid, seriesUid, stack) {
    this.client = client;
    this.scheduler = scheduler;
    this.studyUid = studyUid;
    this.seriesUid = seriesUid;
    this.stack = stack;
    this.values = new Map();
    this.pending = new Map();
    this.focus = 0;
    this.listeners = new Set();
    this.prefetching = false;
    this.aborter = new AbortController();
    this.framesUnsupported = false;
    this.renderedUnsupported = false;
    const first = stack[0]?.format;
    const bytesPerFrame = first ? first.rows * first.columns * Math.max(1, first.samplesPerPixel) * Math.ceil(Math.max(8, first.bitsAllocated) / 8) : 1;
    this.windowFrames = Math.max(8, Math.floor(SERIES_BUDGET_BYTES / bytesPerFrame));
  }

  get total() {
    return this.stack.length;
  }

  get loadedCount() {
    return this.values.size;
  }

  /** The cached value for `index`, or undefined. */
  get(index) {
    return this.values.get(index);
  }

  /** Listen to ('frame', index) and ('progress', {loaded, total}). */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(type, detail) {
    for (const listener of this.listeners) listener(type, detail);
  }

  /** The value for `index`, fetched ahead of background work when not cached yet. */
  load(index) {
    if (this.values.has(index)) return Promise.resolve(this.values.get(index));
    if (this.pending.has(index)) return this.pending.get(index);
    const promise = this.scheduler.runUrgent(() => this.fetch(index));
    this.pending.set(index, promise);
    return promise;
  }

  /** Start (or re-centre) background loading around `index`. */
  prefetchAround(index) {
    this.focus = index;
    this.evictOutsideWindow();
    if (!this.prefetching) {
      this.prefetching = true;
      this.scheduler.addSource(this);
    } else {
      this.scheduler.pump();
    }
  }

  /** For the scheduler: the nearest frame to the focus not requested yet. */
  nextTask() {
    const half = Math.floor(this.windowFrames / 2);
    for (let distance = 0; distance < this.total; distance++) {
      if (distance > half) break;
      for (const index of [this.focus + distance, this.focus - distance]) {
        if (index < 0 || index >= this.total) continue;
        if (this.values.has(index) || this.pending.has(index)) continue;
        const promise = this.fetch(index);
        this.pending.set(index, promise);
        return () => promise;
      }
    }
    return null;
  }

  evictOutsideWindow() {
    const half = Math.floor(this.windowFrames / 2);
    for (const index of this.values.keys()) {
      if (Math.abs(index - this.focus) > half + 4) this.values.delete(index);
    }
  }

  async fetch(index) {
    const entry = this.stack[index];
    let value;
    try {
      if (this.framesUnsupported) throw new Error('frames are not available from this server');
      const bytes = await this.client.frame(this.studyUid, this.seriesUid, entry.sopInstanceUid, entry.frameNumber, this.aborter.signal);
      value = { kind: 'pixels', frame: decodeFrame(bytes, entry.format) };
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      if (UNSUPPORTED_STATUSES.has(error.status)) this.framesUnsupported = true;
      value = await this.fetchRendered(entry, error);
    }
    this.pending.delete(index);
    if (this.aborter.signal.aborted) return value;
    this.values.set(index, value);
    this.emit('frame', index);
    this.emit('progress', { loaded: this.loadedCount, total: this.total });
    return value;
  }

  async fetchRendered(entry, frameError) {
    if (this.renderedUnsupported) return { kind: 'error', error: shortError(frameError) };
    try {
      const bitmap = await this.client.renderedFrame(this.studyUid, this.seriesUid, entry.sopInstanceUid, entry.frameNumber, this.aborter.signal);
      return { kind: 'bitmap', bitmap, reason: String(frameError?.message ?? frameError) };
    } catch (error) {
      // Short enough for the viewport; the console has the whole story.
      console.warn('frame and rendered fallback failed', frameError, error);
      if (UNSUPPORTED_STATUSES.has(error.status)) this.renderedUnsupported = true;
      return { kind: 'error', error: shortError(error) };
    }
  }

  /** Stop background work and forget the pixels. */
  dispose() {
    this.aborter.abort();
    this.scheduler.removeSource(this);
    this.values.clear();
    this.pending.clear();
    this.listeners.clear();
  }
}
