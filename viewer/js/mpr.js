// MPR: the series of the active viewport resliced by the server (GET .../mpr/{plane},
// a minipacs extension) into axial, coronal and sagittal planes, shown in three
// viewports with the original series in the fourth. Each plane is an ordinary stack to
// the viewport (its frames are described by DICOM JSON like series metadata), so window/
// level, scrolling, measurements and reference lines work on it as on any series.

import { FRAME_ACCEPT, RENDERED_ACCEPT } from './dicomweb.js';
import { responseParts } from './multipart.js';
import { SeriesFrames } from './frames.js';
import { buildStack } from './stack.js';
import { TAG, number } from './dicomjson.js';
import { showStatus } from './status.js';
import { t } from './i18n.js';

export const MPR_PLANES = ['axial', 'coronal', 'sagittal'];
const enc = encodeURIComponent;

/** A client for SeriesFrames that fetches a plane's frames from the MPR resources. */
function planeClient(client, base, stack) {
  const numberOf = new Map(stack.map((entry) => [entry.sopInstanceUid, number(entry.meta, TAG.InstanceNumber)]));
  return {
    async frame(studyUid, seriesUid, sopUid, frameNumber, signal) {
      const url = client.url(`${base}/frames/${numberOf.get(sopUid)}`);
      const parts = await responseParts(await client.request(url, FRAME_ACCEPT, signal));
      if (!parts.length) throw new Error(`no part in the MPR frame response for ${url}`);
      return parts[0].body;
    },
    async renderedFrame(studyUid, seriesUid, sopUid, frameNumber, signal) {
      const url = client.url(`${base}/frames/${numberOf.get(sopUid)}/rendered`);
      return createImageBitmap(await (await client.request(url, RENDERED_ACCEPT, signal)).blob());
    },
  };
}

export class Mpr {
  /**
   * @param {import('./studyviewer.js').StudyViewer} viewer
   * @param {HTMLButtonElement|null} button
   */
  constructor(viewer, button) {
    this.viewer = viewer;
    this.button = button;
    this.sourceSeriesUid = null;
    button?.addEventListener('click', () => this.open().catch((error) => this.viewer.hooks.onError(error)));
  }

  /** A plane of a series as a viewport series ({seriesUid, metadata, stack, frames, mpr}). */
  plane(studyUid, seriesUid, plane) {
    const key = `${seriesUid}|mpr|${plane}`;
    const cache = this.viewer.seriesCache;
    if (!cache.has(key)) {
      const client = this.viewer.client;
      const base = `studies/${enc(studyUid)}/series/${enc(seriesUid)}/mpr/${plane}`;
      const promise = client.json(client.url(base)).then(({ items }) => {
        const stack = buildStack(items);
        const frames = new SeriesFrames(planeClient(client, base, stack), this.viewer.scheduler, studyUid, seriesUid, stack);
        return { seriesUid: key, metadata: items, stack, frames, mpr: plane };
      });
      promise.catch(() => cache.delete(key));
      cache.set(key, promise);
    }
    return cache.get(key);
  }

  /** Reslice the active viewport's series into the three planes (2×2 layout). */
  async open() {
    const viewer = this.viewer;
    const source = viewer.active.series;
    if (!source) return;
    // From an MPR viewport, its own source series; otherwise the series shown.
    const studyUid = source.frames.studyUid;
    const seriesUid = source.frames.seriesUid;
    const original = source.mpr ? await viewer.getSeries(seriesUid, studyUid).catch(() => null) : source;
    if (this.button) this.button.disabled = true;
    showStatus(t('mpr.loading'), 'info', 0);
    try {
      const planes = await Promise.all(MPR_PLANES.map((plane) => this.plane(studyUid, seriesUid, plane)));
      viewer.setLayout('2x2', false);
      planes.forEach((series, i) => viewer.viewports[i].setSeries(series, Math.floor(series.stack.length / 2)));
      if (original) viewer.viewports[3].setSeries(original, Math.floor(original.stack.length / 2));
      this.sourceSeriesUid = seriesUid;
      viewer.activate(0);
      viewer.updateSeriesPanel();
      showStatus(t('mpr.shown'));
    } catch (error) {
      showStatus(t('mpr.failed', { error: mprReason(error) }), 'error', 10000);
    } finally {
      if (this.button) this.button.disabled = false;
    }
  }
}

/** The server's reason from an HttpError whose body is {"error": "..."} (perhaps cut short). */
function mprReason(error) {
  const message = String(error?.message ?? error);
  const start = message.indexOf('{"error"');
  if (start < 0) return message;
  try {
    return JSON.parse(message.slice(start)).error;
  } catch {
    return message.slice(start + 10).replace(/"?}?$/, '');
  }
}
