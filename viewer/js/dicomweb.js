// The DICOMweb (PS3.18) requests the viewer makes: QIDO-RS searches, WADO-RS metadata,
// frames, rendered and thumbnail, and study retrieve. Nothing here is minipacs-specific.

import { TAG, sortSeries, text } from './dicomjson.js';
import { responseParts } from './multipart.js';

/** Uncompressed frames: Explicit VR Little Endian (PS3.18 §8.7.3.5.2). */
export const FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1';
export const DICOM_JSON_ACCEPT = 'application/dicom+json';
// "*": instances as stored, no transcoding (PS3.18 §8.7.3.5.2); the plain form is the retry.
export const STUDY_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*';
export const STUDY_ACCEPT_PLAIN = 'multipart/related; type="application/dicom"';
export const RENDERED_ACCEPT = 'image/png, image/jpeg;q=0.9';
export const THUMBNAIL_ACCEPT = 'image/jpeg, image/png;q=0.9';

// JSON answers started by warm() and not yet taken, by URL; the viewer's own JSON requests
// still in flight, by URL; and whether the viewer has asked for anything yet. Module-level
// so that every client on the page (early.js's and main.js's) shares them. early.js and
// main.js are separate modules and either may run first: warm() gives way as soon as the
// viewer asks for itself, so nothing is ever asked twice.
const early = new Map();
const inFlight = new Map();
let viewerAsked = false;

// Who to ask when the server answers 401 (no session, or one the server locked after idle
// time): session.js shows the sign-in form and resolves once signed in again; the request
// is then sent again. Without a handler the 401 is an error as any other.
let onUnauthorized = null;
const SIGN_IN_ATTEMPTS = 3;

/** @param {() => Promise<void>} handler */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

// Whether the browser was signed out when last seen ("out"), so that early.js does not
// send requests bound to answer 401. The session cookie itself is HttpOnly: unreadable.
const SESSION_HINT_KEY = 'minipacs.session';

export function sessionHint() {
  try {
    return localStorage.getItem(SESSION_HINT_KEY);
  } catch {
    return null;
  }
}

/** @param {'in'|'out'} value */
export function setSessionHint(value) {
  try {
    localStorage.setItem(SESSION_HINT_KEY, value);
  } catch {
    // Only early.js's head start depends on it.
  }
}

export class HttpError extends Error {
  constructor(status, url, detail = '') {
    super(`HTTP ${status} for ${url}${detail ? `: ${detail}` : ''}`);
    this.status = status;
    this.url = url;
  }
}

/** Default base: `?server=` on the page URL, else `/dicom-web` next to `/viewer/`. */
export function defaultBaseUrl(location) {
  const override = new URL(location.href).searchParams.get('server');
  return new URL(override || '../dicom-web', location.href).href.replace(/\/+$/, '');
}

export class DicomWebClient {
  /** @param {string} baseUrl absolute DICOMweb base URL, no trailing slash */
  constructor(baseUrl) {
    this.baseUrl = baseUrl;
  }

  url(path, query) {
    const url = new URL(`${this.baseUrl}/${path}`);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, String(value));
    }
    return url.href;
  }

  async request(url, accept, signal) {
    // Signing in helps only with the viewer's own server (`&server=` may point elsewhere).
    const signInHelps = onUnauthorized && new URL(url).origin === window.location.origin;
    let response;
    for (let attempt = 1; ; attempt++) {
      response = await fetch(url, { headers: { Accept: accept }, signal, credentials: 'same-origin' });
      if (response.status !== 401 || !signInHelps || attempt >= SIGN_IN_ATTEMPTS) break;
      // The session cookie is missing or the server locked it: sign in, then ask again.
      await response.body?.cancel();
      await onUnauthorized();
      signal?.throwIfAborted();
    }
    if (!response.ok) {
      let detail = '';
      try {
        detail = (await response.text()).slice(0, 300);
      } catch {
        // The body is only a courtesy for the message.
      }
      throw new HttpError(response.status, url, detail);
    }
    return response;
  }

  async json(url, signal) {
    viewerAsked = true;
    const started = early.get(url);
    if (started) {
      early.delete(url);
      // Sent before anyone was signed in: ask again, through the sign-in form if need be.
      return started.catch((error) => {
        if (error instanceof HttpError && error.status === 401) return this.fetchJson(url, signal);
        throw error;
      });
    }
    const promise = this.fetchJson(url, signal);
    inFlight.set(url, promise);
    promise.then(
      () => inFlight.delete(url),
      () => inFlight.delete(url),
    );
    return promise;
  }

  async fetchJson(url, signal) {
    const response = await this.request(url, DICOM_JSON_ACCEPT, signal);
    // 204 No Content: a search without matches (PS3.18 §10.6.3.2 allows it).
    if (response.status === 204) return { items: [], warning: response.headers.get('warning') };
    const textBody = await response.text();
    return { items: textBody.trim() ? JSON.parse(textBody) : [], warning: response.headers.get('warning') };
  }

  /**
   * Start a JSON request now, before anything asks for it; the next json() call for the
   * same URL takes its answer instead of asking again. Once the viewer asks for itself,
   * warming stops (it would race the viewer's own requests): warm() then shares the
   * viewer's request for the same URL if one is in flight, and otherwise rejects.
   */
  warm(url) {
    if (inFlight.has(url)) return inFlight.get(url);
    if (viewerAsked && !early.has(url)) return Promise.reject(new Error('the viewer is already asking'));
    if (!early.has(url)) {
      const promise = this.fetchJson(url);
      // Nobody may ever take it: a failure then is not an error worth reporting.
      promise.catch(() => {});
      early.set(url, promise);
    }
    return early.get(url);
  }

  /**
   * Ask for what opening a study needs first (the study, its series, the first series'
   * metadata) while the rest of the viewer is still loading.
   */
  async warmStudy(studyUid) {
    // A refusal (the viewer got there first) needs no handling: the viewer asks itself.
    this.warm(this.studiesUrl({ StudyInstanceUID: studyUid })).catch(() => {});
    const { items } = await this.warm(this.seriesUrl(studyUid));
    const first = sortSeries(items)[0];
    if (first) this.warm(this.metadataUrl(studyUid, text(first, TAG.SeriesInstanceUID))).catch(() => {});
  }

  studiesUrl(query) {
    return this.url('studies', { includefield: 'all', ...query });
  }

  seriesUrl(studyUid) {
    return this.url(`studies/${enc(studyUid)}/series`, { includefield: 'all' });
  }

  metadataUrl(studyUid, seriesUid) {
    return this.url(`studies/${enc(studyUid)}/series/${enc(seriesUid)}/metadata`);
  }

  /**
   * QIDO-RS SearchForStudies (PS3.18 §10.6).
   * @param {Object<string,string|number>} query matching keys and limit/offset/fuzzymatching
   * @returns {Promise<{items: object[], warning: string|null}>}
   */
  searchStudies(query, signal) {
    return this.json(this.studiesUrl(query), signal);
  }

  /** QIDO-RS SearchForSeries within a study. */
  async searchSeries(studyUid, signal) {
    const { items } = await this.json(this.seriesUrl(studyUid), signal);
    return items;
  }

  /** WADO-RS series metadata: one DICOM JSON object per instance, bulk data as BulkDataURI. */
  async seriesMetadata(studyUid, seriesUid, signal) {
    const { items } = await this.json(this.metadataUrl(studyUid, seriesUid), signal);
    return items;
  }

  /**
   * WADO-RS RetrieveFrames, uncompressed little endian.
   * @param {number} frameNumber 1-based
   * @returns {Promise<Uint8Array>} the frame's pixel bytes
   */
  async frame(studyUid, seriesUid, sopUid, frameNumber, signal) {
    const url = this.url(`studies/${enc(studyUid)}/series/${enc(seriesUid)}/instances/${enc(sopUid)}/frames/${frameNumber}`);
    const response = await this.request(url, FRAME_ACCEPT, signal);
    const parts = await responseParts(response);
    if (!parts.length) throw new Error(`no part in the frames response for ${url}`);
    return parts[0].body;
  }

  /** WADO-RS rendered frame (server-windowed PNG/JPEG), as an ImageBitmap. */
  async renderedFrame(studyUid, seriesUid, sopUid, frameNumber, signal) {
    const base = `studies/${enc(studyUid)}/series/${enc(seriesUid)}/instances/${enc(sopUid)}`;
    let response;
    try {
      response = await this.request(this.url(`${base}/frames/${frameNumber}/rendered`), RENDERED_ACCEPT, signal);
    } catch (error) {
      if (frameNumber !== 1 || error.name === 'AbortError') throw error;
      response = await this.request(this.url(`${base}/rendered`), RENDERED_ACCEPT, signal);
    }
    return createImageBitmap(await response.blob());
  }

  /** WADO-RS series thumbnail (PS3.18 §9.7), as an object URL. */
  async seriesThumbnail(studyUid, seriesUid, signal) {
    const url = this.url(`studies/${enc(studyUid)}/series/${enc(seriesUid)}/thumbnail`);
    const response = await this.request(url, THUMBNAIL_ACCEPT, signal);
    const blob = await response.blob();
    if (!blob.type.startsWith('image/')) throw new Error(`thumbnail answered ${blob.type || 'no type'}, not an image`);
    return URL.createObjectURL(blob);
  }

  /**
   * WADO-RS RetrieveStudy as Part-10 instances, streaming so the caller can show progress.
   * @param {(bytesReceived:number) => void} onProgress
   * @returns {Promise<{headers: Object<string,string>, body: Uint8Array}[]>}
   */
  async retrieveStudy(studyUid, onProgress, signal) {
    const url = this.url(`studies/${enc(studyUid)}`);
    const response = await this.requestPart10(url, signal);
    return responseParts(await withProgress(response, onProgress));
  }

  async requestPart10(url, signal) {
    try {
      return await this.request(url, STUDY_ACCEPT, signal);
    } catch (error) {
      if (!(error instanceof HttpError) || error.status !== 406) throw error;
      return this.request(url, STUDY_ACCEPT_PLAIN, signal);
    }
  }

  /** WADO-RS RetrieveInstance, one Part-10 file. */
  async retrieveInstance(studyUid, seriesUid, sopUid, signal) {
    const url = this.url(`studies/${enc(studyUid)}/series/${enc(seriesUid)}/instances/${enc(sopUid)}`);
    const parts = await responseParts(await this.requestPart10(url, signal));
    if (!parts.length) throw new Error(`no part in the instance response for ${url}`);
    return parts[0].body;
  }
}

function enc(uid) {
  return encodeURIComponent(uid);
}

// Re-wrap a response so reading its body reports the bytes received so far.
async function withProgress(response, onProgress) {
  if (!response.body || !onProgress) return response;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.byteLength;
    onProgress(received);
  }
  return new Response(new Blob(chunks), { headers: response.headers, status: response.status });
}
