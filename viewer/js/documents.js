// What other systems send besides images (issue #14, "Reading"): structured reports shown
// as text (srview.js), Encapsulated PDFs shown in the page, video objects played. A series
// of one of these kinds shows here, over the viewport grid, instead of on a canvas.
//
// The bytes come over WADO-RS bulk data (PS3.18 §10.4.1.1.1): the PDF is the Encapsulated
// Document (0042,0011); a video is the Pixel Data (7FE0,0010), which the server sends as
// video/mp4 (or video/mpeg2) for instances stored in a video transfer syntax. Both become
// blob: URLs of this page (the viewer's CSP allows blob: for frames and media, nothing else).

import { TAG, text, values } from './dicomjson.js';
import { HttpError } from './dicomweb.js';
import { responseParts } from './multipart.js';
import { renderStructuredReport } from './srview.js';
import { showStatus } from './status.js';
import { t } from './i18n.js';

export const ENCAPSULATED_PDF = '1.2.840.10008.5.1.4.1.1.104.1';
const KOS = '1.2.840.10008.5.1.4.1.1.88.59';
const SR_PREFIX = '1.2.840.10008.5.1.4.1.1.88.';
const ENCAPSULATED_DOCUMENT = '00420011';
const ENCAPSULATED_DOCUMENT_LENGTH = '00420015';
// PS3.5 Annex A: MPEG-2 (.100/.101 and fragmentable), MPEG-4 AVC/H.264 (.102-.106),
// HEVC/H.265 (.107/.108) transfer syntaxes.
const VIDEO_SYNTAX = /^1\.2\.840\.10008\.1\.2\.4\.1(0[0-8])(\.1)?$/;
const PART_ACCEPT = 'multipart/related; type="application/octet-stream"';
const VIDEO_ACCEPT = 'video/mp4, video/mpeg2;q=0.9';
// Series of these modalities hold no images: the viewports never get them by themselves.
export const DOCUMENT_MODALITIES = new Set(['SR', 'DOC', 'KO', 'PR']);

/** 'sr', 'pdf', 'video', or '' (images) for one instance's metadata. */
export function documentKind(meta) {
  const sopClass = text(meta, TAG.SOPClassUID);
  if (sopClass === ENCAPSULATED_PDF) return 'pdf';
  if (sopClass.startsWith(SR_PREFIX) && sopClass !== KOS) return 'sr';
  if (VIDEO_SYNTAX.test(text(meta, TAG.TransferSyntaxUID))) return 'video';
  return '';
}

/** The document kind of a series (its first instance's), '' for image series. */
export function seriesDocumentKind(metadata) {
  return metadata.length ? documentKind(metadata[0]) : '';
}

/** A short icon for a series card of a kind (series of KO/PR: a generic document). */
export function kindIcon(kind) {
  return { sr: '≣', pdf: 'PDF', video: '▶', '': '' }[kind] ?? '▤';
}

function instanceUrl(client, studyUid, seriesUid, sopUid) {
  const e = encodeURIComponent;
  return `${client.baseUrl}/studies/${e(studyUid)}/series/${e(seriesUid)}/instances/${e(sopUid)}`;
}

/** The PDF of an Encapsulated PDF instance as a Blob (application/pdf). */
export async function fetchPdf(client, studyUid, seriesUid, sopUid, meta) {
  const response = await client.request(`${instanceUrl(client, studyUid, seriesUid, sopUid)}/bulkdata/${ENCAPSULATED_DOCUMENT}`, PART_ACCEPT);
  const parts = await responseParts(response);
  if (!parts.length) throw new Error(`no part in the bulk data of ${sopUid}`);
  let bytes = parts[0].body;
  // The value is padded to an even length (PS3.5 §7.1.1); the length element says how long
  // the document itself is (PS3.3 §C.24.2).
  const length = Number(values(meta, ENCAPSULATED_DOCUMENT_LENGTH)[0]);
  if (Number.isInteger(length) && length > 0 && length <= bytes.length) bytes = bytes.subarray(0, length);
  const blob = new Blob([bytes], { type: 'application/pdf' });
  // What the document starts with ("%PDF-"), for the test hooks: the page's CSP lets no
  // script fetch a blob: URL back.
  blob.head = String.fromCharCode(...bytes.subarray(0, 5));
  return blob;
}

/** The video stream of a video instance as a Blob (video/mp4 or video/mpeg2). */
export async function fetchVideo(client, studyUid, seriesUid, sopUid) {
  const response = await client.request(`${instanceUrl(client, studyUid, seriesUid, sopUid)}/bulkdata/7FE00010`, VIDEO_ACCEPT);
  const type = (response.headers.get('content-type') ?? 'video/mp4').split(';')[0];
  return new Blob([await response.arrayBuffer()], { type });
}

/** A PDF shown in an <iframe> from a blob: URL, with a download link next to it. */
export function pdfFrame(url, title, head = '') {
  const frame = document.createElement('iframe');
  frame.dataset.head = head;
  frame.className = 'pdf-frame';
  frame.dataset.testid = 'pdf-frame';
  frame.title = title;
  frame.src = url;
  return frame;
}

export class DocumentView {
  /**
   * @param {{client: import('./dicomweb.js').DicomWebClient, studyUid: string|null,
   *          grid: HTMLElement}} viewer the StudyViewer
   * @param {HTMLElement} pane where the document shows (over the viewport grid)
   */
  constructor(viewer, pane) {
    this.viewer = viewer;
    this.pane = pane;
    this.kind = '';
    this.seriesUid = null;
    this.urls = [];
    this.token = 0;
  }

  get shown() {
    return !this.pane.hidden;
  }

  hide() {
    this.token++;
    for (const video of this.pane.querySelectorAll('video')) video.pause();
    this.pane.replaceChildren();
    this.pane.hidden = true;
    this.viewer.grid.hidden = false;
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
    this.kind = '';
    this.seriesUid = null;
  }

  /** Show a series of documents (every instance of it, in order). */
  async show(series, kind) {
    this.hide();
    const token = this.token;
    this.kind = kind;
    this.seriesUid = series.seriesUid;
    this.viewer.grid.hidden = true;
    this.pane.hidden = false;
    this.pane.dataset.kind = kind;
    const studyUid = this.viewer.studyUid;
    const client = this.viewer.client;
    for (const meta of series.metadata) {
      if (token !== this.token) return;
      const sopUid = text(meta, TAG.SOPInstanceUID);
      const holder = document.createElement('div');
      holder.className = `document-item document-${kind}`;
      this.pane.append(holder);
      try {
        if (kind === 'sr') {
          holder.append(renderStructuredReport(meta, (sop) => this.openReferenced(sop).catch((error) => showStatus(t('documents.failed', { error: error.message }), 'error', 10000))));
        } else if (kind === 'pdf') {
          holder.textContent = t('viewer.loading');
          const blob = await fetchPdf(client, studyUid, series.seriesUid, sopUid, meta);
          if (token !== this.token) return;
          const url = URL.createObjectURL(blob);
          this.urls.push(url);
          const title = text(meta, '00420010') || t('documents.pdf');
          const download = document.createElement('a');
          download.href = url;
          download.download = `${title.replace(/[^\p{L}\p{N}._-]+/gu, '_')}.pdf`;
          download.textContent = t('documents.download');
          download.dataset.testid = 'pdf-download';
          holder.replaceChildren(download, pdfFrame(url, title, blob.head));
        } else if (kind === 'video') {
          holder.textContent = t('viewer.loading');
          const blob = await fetchVideo(client, studyUid, series.seriesUid, sopUid);
          if (token !== this.token) return;
          const url = URL.createObjectURL(blob);
          this.urls.push(url);
          const video = document.createElement('video');
          video.controls = true;
          video.preload = 'auto';
          video.dataset.testid = 'document-video';
          video.addEventListener('error', () => {
            const note = document.createElement('p');
            note.className = 'document-error';
            note.textContent = t('documents.videoUnplayable', { type: blob.type });
            holder.append(note);
          });
          video.src = url;
          holder.replaceChildren(video);
        }
      } catch (error) {
        holder.textContent = t('documents.failed', { error: error instanceof HttpError ? `HTTP ${error.status}` : error.message });
        showStatus(holder.textContent, 'error', 10000);
      }
    }
  }

  /** An SR's IMAGE item: show that image in the active viewport. */
  async openReferenced(sopUid) {
    const viewer = this.viewer;
    for (const series of viewer.seriesInfo) {
      const seriesUid = text(series, TAG.SeriesInstanceUID);
      if (DOCUMENT_MODALITIES.has(text(series, TAG.Modality))) continue;
      const loaded = await viewer.getSeries(seriesUid);
      const index = loaded.stack.findIndex((entry) => entry.sopInstanceUid === sopUid);
      if (index < 0) continue;
      this.hide();
      await viewer.loadSeriesInto(viewer.activeIndex, seriesUid);
      viewer.active.setIndex(index);
      return;
    }
    throw new Error(t('documents.notInStudy', { uid: sopUid }));
  }

  /** For the test hooks: what shows and its state. */
  snapshot() {
    const video = this.pane.querySelector('video');
    const frame = this.pane.querySelector('iframe');
    return {
      shown: this.shown,
      kind: this.kind,
      seriesUid: this.seriesUid,
      text: this.kind === 'sr' ? this.pane.innerText : '',
      pdfUrl: frame?.src ?? null,
      pdfHead: frame?.dataset.head ?? null,
      video: video ? { readyState: video.readyState, duration: Number.isFinite(video.duration) ? video.duration : 0, error: video.error?.code ?? 0 } : null,
    };
  }
}
