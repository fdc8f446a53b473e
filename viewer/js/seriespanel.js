// The series panel: one card per series (thumbnail, number, modality, description, image
// count), clicked to show it in the active viewport or dragged onto any viewport.

import { TAG, number, text } from './dicomjson.js';
import { t } from './i18n.js';
import { COLOR_IDENTITY_WINDOW, renderFrame } from './lut.js';
import { modalityRange } from './pixels.js';
import { headerWindow } from './viewport.js';
import { kindIcon, seriesDocumentKind } from './documents.js';

// Modalities of series that hold documents, not images: an icon and a label, no thumbnail.
const DOCUMENT_KINDS = { SR: 'sr', DOC: 'pdf', KO: 'ko', PR: 'pr' };

export const SERIES_DRAG_TYPE = 'application/x-minipacs-series';
const THUMB_SIZE = 96;

function imageCountText(n) {
  return t(n === 1 ? 'viewer.image' : 'viewer.images', { n });
}

function countText(frames, instances) {
  const images = imageCountText(instances);
  return frames > instances ? `${images} · ${t('viewer.frames', { n: frames })}` : images;
}

export class SeriesPanel {
  /**
   * @param {HTMLElement} list container for the cards
   * @param {(seriesUid: string) => void} onSelect a card was clicked
   */
  constructor(list, onSelect) {
    this.list = list;
    this.onSelect = onSelect;
  }

  card(seriesUid) {
    return this.list.querySelector(`[data-series-uid="${CSS.escape(seriesUid)}"]`);
  }

  /** One card per series (QIDO series results, in display order). */
  render(seriesInfo) {
    this.list.replaceChildren(...seriesInfo.map((series) => this.makeCard(series)));
  }

  makeCard(series) {
    const uid = text(series, TAG.SeriesInstanceUID);
    const item = document.createElement('button');
    item.type = 'button';
    item.className = 'series-item';
    item.dataset.testid = 'series-thumbnail';
    item.dataset.seriesUid = uid;
    item.draggable = true;
    const thumb = document.createElement('div');
    thumb.className = 'series-thumb';
    const label = document.createElement('div');
    label.className = 'series-label';
    const seriesNumber = text(series, TAG.SeriesNumber);
    const title = document.createElement('div');
    title.className = 'series-title';
    title.textContent = [seriesNumber ? `S${seriesNumber}` : '', text(series, TAG.Modality)].filter(Boolean).join(' · ');
    const description = document.createElement('div');
    description.className = 'series-description';
    description.textContent = text(series, TAG.SeriesDescription);
    const kind = DOCUMENT_KINDS[text(series, TAG.Modality)];
    if (kind) markDocument(item, thumb, description, kind);
    const count = document.createElement('div');
    count.className = 'series-count';
    const instances = number(series, TAG.NumberOfSeriesRelatedInstances);
    count.textContent = instances !== undefined ? imageCountText(instances) : '';
    label.append(title, description, count);
    item.title = [title.textContent, description.textContent].filter(Boolean).join(' – ');
    item.append(thumb, label);
    item.addEventListener('click', () => this.onSelect(uid));
    item.addEventListener('dragstart', (event) => {
      event.dataTransfer.setData(SERIES_DRAG_TYPE, uid);
      event.dataTransfer.setData('text/plain', uid);
      event.dataTransfer.effectAllowed = 'copy';
    });
    return item;
  }

  /** Mark the active viewport's series and the ones on screen. */
  highlight(activeUid, shownUids) {
    for (const item of this.list.children) {
      item.classList.toggle('active', item.dataset.seriesUid === activeUid);
      item.classList.toggle('shown', shownUids.has(item.dataset.seriesUid));
    }
  }

  /** Once the metadata is known: "40 images", or "1 image · 20 frames". */
  setCount(seriesUid, frames, instances) {
    const count = this.card(seriesUid)?.querySelector('.series-count');
    if (count) count.textContent = countText(frames, instances);
  }

  /** Re-render texts after a language switch. */
  relabel(seriesInfo, loadedByUid) {
    for (const item of this.list.querySelectorAll('[data-document-kind]')) labelDocument(item);
    for (const series of seriesInfo) {
      const uid = text(series, TAG.SeriesInstanceUID);
      const loaded = loadedByUid.get(uid);
      if (loaded) this.setCount(uid, loaded.stack.length, loaded.metadata.length);
      else {
        const count = this.card(uid)?.querySelector('.series-count');
        if (count) count.textContent = imageCountText(number(series, TAG.NumberOfSeriesRelatedInstances, 0));
      }
    }
  }

  /**
   * Thumbnails one after another (they are small; viewports get the bandwidth). A series
   * without a server thumbnail gets its middle image drawn here.
   * @param {() => boolean} stillCurrent false once another study opened
   */
  async loadThumbnails(client, studyUid, seriesInfo, getSeries, stillCurrent) {
    for (const series of seriesInfo) {
      if (!stillCurrent()) return;
      const uid = text(series, TAG.SeriesInstanceUID);
      const holder = this.card(uid)?.querySelector('.series-thumb');
      if (!holder || holder.closest('[data-document-kind]')) continue;
      try {
        const url = await client.seriesThumbnail(studyUid, uid);
        const img = new Image();
        img.alt = '';
        img.src = url;
        holder.replaceChildren(img);
      } catch {
        const loaded = await getSeries(uid).catch(() => null);
        const kind = loaded ? seriesDocumentKind(loaded.metadata) : '';
        const card = this.card(uid);
        if (kind && card) markDocument(card, holder, card.querySelector('.series-description'), kind);
        else drawMiddleImage(loaded, holder).catch(() => holder.classList.add('failed'));
      }
    }
  }
}

async function drawMiddleImage(series, holder) {
  if (!series?.stack.length) throw new Error('series has no images');
  const index = Math.floor(series.stack.length / 2);
  const value = await series.frames.load(index);
  let source;
  if (value.kind === 'pixels') {
    const frame = value.frame;
    let window = frame.color ? COLOR_IDENTITY_WINDOW : headerWindow(series.stack[index].meta);
    if (!window) {
      const { min, max } = modalityRange(frame);
      window = { center: (min + max) / 2, width: Math.max(1, max - min) };
    }
    const imageData = new ImageData(frame.columns, frame.rows);
    renderFrame(frame, { ...window, invert: false }, imageData.data);
    source = document.createElement('canvas');
    source.width = frame.columns;
    source.height = frame.rows;
    source.getContext('2d').putImageData(imageData, 0, 0);
  } else if (value.kind === 'bitmap') {
    source = value.bitmap;
  } else {
    throw new Error(value.error);
  }
  const canvas = document.createElement('canvas');
  canvas.width = THUMB_SIZE;
  canvas.height = THUMB_SIZE;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, THUMB_SIZE, THUMB_SIZE);
  const scale = Math.min(THUMB_SIZE / source.width, THUMB_SIZE / source.height);
  const w = source.width * scale;
  const h = source.height * scale;
  ctx.drawImage(source, (THUMB_SIZE - w) / 2, (THUMB_SIZE - h) / 2, w, h);
  holder.replaceChildren(canvas);
}

/** A series of documents (SR, PDF, video, key objects): an icon for a thumbnail, a label. */
function markDocument(item, thumb, description, kind) {
  item.dataset.documentKind = kind;
  item.dataset.description = description.textContent;
  thumb.classList.add('series-doc-icon');
  thumb.textContent = kindIcon(kind);
  labelDocument(item, description);
}

function labelDocument(item, description = item.querySelector('.series-description')) {
  const own = item.dataset.description;
  const kind = t(`documents.kind.${item.dataset.documentKind}`);
  description.textContent = own ? `${kind} – ${own}` : kind;
}
