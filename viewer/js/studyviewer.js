// The study viewer page: series panel, toolbar, 1×1 / 1×2 / 2×2 viewports, keyboard
// shortcuts, tag browser, ZIP download and PNG export.

import { TAG, patientName, sortSeries, text } from './dicomjson.js';
import { formatDicomDate, formatSex, formatNumber, t } from './i18n.js';
import { RequestScheduler, SeriesFrames } from './frames.js';
import { buildStack } from './stack.js';
import { Viewport } from './viewport.js';
import { ViewportInteraction } from './tools.js';
import { CT_PRESETS } from './lut.js';
import { SERIES_DRAG_TYPE, SeriesPanel } from './seriespanel.js';
import { TagBrowser } from './tagbrowser.js';
import { Priors } from './priors.js';
import { KeyImages } from './keyimages.js';
import { ReportPanel } from './report.js';
import { DOCUMENT_MODALITIES, DocumentView, seriesDocumentKind } from './documents.js';
import { studyZip, zipFileName } from './download.js';
import { showStatus } from './status.js';
import { Mpr } from './mpr.js';
import { ReferenceLines } from './reflines.js';
import { renderHelp, shortcutFor, showHelp } from './keyboard.js';
import { Hanging } from './hanging.js';

const LAYOUTS = { '1x1': 1, '1x2': 2, '2x2': 4 };

function saveBlob(blob, fileName) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export class StudyViewer {
  /**
   * @param {import('./dicomweb.js').DicomWebClient} client
   * @param {{onBack: () => void, onError: (error: Error) => void}} hooks
   */
  constructor(client, hooks) {
    this.client = client;
    this.hooks = hooks;
    this.scheduler = new RequestScheduler(4);
    this.studyUid = null;
    this.study = null;
    this.seriesInfo = [];
    this.seriesCache = new Map();
    this.tool = 'wl';
    this.layout = '1x1';
    this.maximized = null;
    this.lastMeasurement = null;
    this.openToken = 0;
    this.view = document.getElementById('study-viewer-view');
    this.grid = document.getElementById('viewport-grid');
    this.seriesPanel = new SeriesPanel(document.getElementById('series-list'), (uid) => this.loadSeriesInto(this.activeIndex, uid));
    this.header = document.getElementById('study-header');
    this.viewports = [];
    this.interactions = [];
    for (let i = 0; i < 4; i++) {
      const element = document.createElement('div');
      this.grid.append(element);
      const viewport = new Viewport(element, i, {
        onChange: (vp) => this.onViewportChange(vp),
        onMeasurement: (result) => {
          this.lastMeasurement = result;
        },
        onRender: (vp) => this.referenceLines?.draw(vp),
      });
      this.viewports.push(viewport);
      this.interactions.push(
        new ViewportInteraction(viewport, {
          activeTool: () => this.tool,
          onActivate: (vp) => this.activate(vp.index),
          onToggleMaximize: (vp) => this.toggleMaximize(vp.index),
        }),
      );
      this.acceptSeriesDrops(viewport);
    }
    this.activeIndex = 0;
    this.bindToolbar();
    this.bindDialogs();
    this.tagBrowser = new TagBrowser(document.getElementById('tags-dialog'));
    this.keyImages = new KeyImages(this, document.querySelector('[data-action=key-image]'));
    // SR, PDF and video series show here instead of in the viewports (documents.js).
    this.documents = new DocumentView(this, document.getElementById('document-view'));
    this.priors = new Priors(this, document.getElementById('prior-list'), document.getElementById('sync-lock'));
    this.report = new ReportPanel(this, document.getElementById('report-panel'), document.querySelector('[data-action=report]'), hooks.user ?? (() => null));
    this.hanging = new Hanging(this);
    document.addEventListener('keydown', (event) => this.onKeyDown(event));
    this.applyLayout();
    // Reading (issue #14): reference lines between viewports, server-side MPR.
    this.referenceLines = new ReferenceLines({ visibleViewports: () => this.viewports.filter((vp) => !vp.element.hidden) });
    this.mpr = new Mpr(this, document.querySelector('[data-action=mpr]'));
  }

  get active() {
    return this.viewports[this.activeIndex];
  }

  get isShown() {
    return !this.view.hidden;
  }

  // ---- opening a study ----------------------------------------------------------------

  /** Show the study; resolves when its first images are in and the thumbnails asked for. */
  async open(studyUid) {
    if (this.studyUid === studyUid && this.seriesInfo.length) return;
    const token = ++this.openToken;
    this.close();
    this.studyUid = studyUid;
    this.header.textContent = t('viewer.loadingStudy');
    this.seriesPanel.render([]);
    this.hanging.load();
    const [studies, series] = await Promise.all([
      this.client.searchStudies({ StudyInstanceUID: studyUid }).then((r) => r.items),
      // An unknown study may answer 404 rather than an empty list.
      this.client.searchSeries(studyUid).catch((error) => (error.status === 404 ? [] : Promise.reject(error))),
    ]);
    if (token !== this.openToken) return;
    this.study = studies[0] ?? null;
    if (!this.study && !series.length) {
      this.header.textContent = t('viewer.studyNotFound', { uid: studyUid });
      return;
    }
    this.seriesInfo = sortSeries(series);
    this.renderHeader();
    this.seriesPanel.render(this.seriesInfo);
    // Kept: a hanging protocol with "the newest prior" waits for the list (hanging.js).
    this.priorsLoading = this.priors.load(this.study, () => token === this.openToken).catch((error) => this.hooks.onError(error));
    this.report.studyOpened(studyUid);
    if (!this.seriesInfo.length) {
      this.header.textContent += ` — ${t('viewer.noSeries')}`;
      return;
    }
    // The best-matching hanging protocol lays the viewports out (else: next series each).
    await this.hanging.apply(() => token === this.openToken);
    // The server renders thumbnails: ask once the first images are in, not alongside them.
    await this.firstImagesLoaded();
    if (token !== this.openToken) return;
    this.seriesPanel.loadThumbnails(this.client, studyUid, this.seriesInfo, (uid) => this.getSeries(uid), () => token === this.openToken);
  }

  /** Resolves when each visible viewport's image has loaded (or failed), or after 3 s. */
  firstImagesLoaded() {
    const loads = this.viewports
      .slice(0, LAYOUTS[this.layout])
      .filter((viewport) => viewport.frames)
      .map((viewport) => viewport.frames.load(viewport.imageIndex).catch(() => {}));
    return Promise.race([Promise.all(loads), new Promise((resolve) => setTimeout(resolve, 3000))]);
  }

  /** Forget the current study: stop loading and free the pixels. */
  close() {
    for (const viewport of this.viewports) viewport.stopCine();
    for (const entry of this.seriesCache.values()) entry.then((s) => s?.frames.dispose()).catch(() => {});
    this.seriesCache.clear();
    this.studyUid = null;
    this.study = null;
    this.seriesInfo = [];
    this.lastMeasurement = null;
    this.maximized = null;
    this.priors?.clear();
    this.keyImages?.clear();
    this.report?.clear();
    this.documents?.hide();
    for (const viewport of this.viewports) viewport.clear();
    this.applyLayout();
  }

  renderHeader() {
    const s = this.study ?? {};
    const parts = [
      patientName(s),
      text(s, TAG.PatientID),
      [formatDicomDate(text(s, TAG.PatientBirthDate)), formatSex(text(s, TAG.PatientSex))].filter(Boolean).join(' · '),
      formatDicomDate(text(s, TAG.StudyDate)),
      text(s, TAG.StudyDescription),
    ].filter(Boolean);
    this.header.textContent = parts.join('   |   ');
  }

  /** Series metadata, stack and frame cache, fetched once per series (of this study or a prior). */
  getSeries(seriesUid, studyUid = this.studyUid) {
    if (!this.seriesCache.has(seriesUid)) {
      const promise = this.client.seriesMetadata(studyUid, seriesUid).then((metadata) => {
        const stack = buildStack(metadata);
        return { seriesUid, metadata, stack, frames: new SeriesFrames(this.client, this.scheduler, studyUid, seriesUid, stack) };
      });
      promise.catch(() => this.seriesCache.delete(seriesUid));
      this.seriesCache.set(seriesUid, promise);
    }
    return this.seriesCache.get(seriesUid);
  }

  async loadSeriesInto(viewportIndex, seriesUid, studyUid = this.studyUid) {
    const viewport = this.viewports[viewportIndex];
    viewport.showMessage(t('viewer.loading'));
    try {
      const series = await this.getSeries(seriesUid, studyUid);
      if (this.viewports[viewportIndex] !== viewport) return;
      const kind = seriesDocumentKind(series.metadata);
      if (kind) {
        viewport.showMessage('');
        this.seriesPanel.highlight(seriesUid, new Set([seriesUid]));
        await this.documents.show(series, kind);
        return;
      }
      if (this.documents.shown) this.documents.hide();
      viewport.setSeries(series, 0);
      this.updateSeriesPanel();
      if (series.stack.length) this.seriesPanel.setCount(seriesUid, series.stack.length, series.metadata.length);
    } catch (error) {
      viewport.showMessage(`${t('viewer.frameFailed')}: ${error.message}`);
      this.hooks.onError(error);
    }
  }

  /** Give each visible empty viewport the next series nobody shows yet. */
  async fillEmptyViewports() {
    const visible = this.viewports.slice(0, LAYOUTS[this.layout]);
    const shown = new Set(this.viewports.map((vp) => vp.series?.seriesUid).filter(Boolean));
    const waiting = [];
    // Document series (SR, PDF, key objects) only on request; a study of documents alone
    // shows its first one.
    const images = this.seriesInfo.filter((s) => !DOCUMENT_MODALITIES.has(text(s, TAG.Modality)));
    if (!images.length && this.seriesInfo.length && !this.documents.shown) {
      waiting.push(this.loadSeriesInto(0, text(this.seriesInfo[0], TAG.SeriesInstanceUID)));
    }
    for (const viewport of visible) {
      if (viewport.series) continue;
      const next = images.find((s) => !shown.has(text(s, TAG.SeriesInstanceUID)));
      if (!next) break;
      const uid = text(next, TAG.SeriesInstanceUID);
      shown.add(uid);
      waiting.push(this.loadSeriesInto(viewport.index, uid));
    }
    await Promise.all(waiting);
  }

  // ---- series panel (seriespanel.js) ----------------------------------------------------

  updateSeriesPanel() {
    const shown = this.viewports.slice(0, LAYOUTS[this.layout]).map((vp) => vp.series?.seriesUid);
    this.seriesPanel.highlight(this.active.series?.seriesUid, new Set(shown));
  }

  acceptSeriesDrops(viewport) {
    const el = viewport.element;
    el.addEventListener('dragover', (event) => {
      if (![...event.dataTransfer.types].includes(SERIES_DRAG_TYPE)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = 'copy';
      el.classList.add('drop-target');
    });
    el.addEventListener('dragleave', () => el.classList.remove('drop-target'));
    el.addEventListener('drop', (event) => {
      el.classList.remove('drop-target');
      const uid = event.dataTransfer.getData(SERIES_DRAG_TYPE);
      if (!uid) return;
      event.preventDefault();
      const index = Number(el.dataset.index);
      this.activate(index);
      this.loadSeriesInto(index, uid);
    });
  }

  // ---- layout and active viewport ---------------------------------------------------------

  /** `fill`: give empty viewports the next series (not when a prior is about to go there). */
  setLayout(layout, fill = true) {
    if (!LAYOUTS[layout]) return;
    this.layout = layout;
    this.maximized = null;
    if (this.activeIndex >= LAYOUTS[layout]) this.activeIndex = 0;
    this.applyLayout();
    if (this.studyUid && fill) this.fillEmptyViewports();
  }

  applyLayout() {
    const count = LAYOUTS[this.layout];
    this.grid.className = `viewport-grid layout-${this.maximized !== null ? '1x1' : this.layout}`;
    this.viewports.forEach((vp, i) => {
      const visible = this.maximized !== null ? i === this.maximized : i < count;
      vp.element.hidden = !visible;
      vp.element.classList.toggle('active', i === this.activeIndex);
      vp.element.dataset.active = String(i === this.activeIndex);
    });
    for (const button of document.querySelectorAll('[data-layout]')) button.setAttribute('aria-pressed', String(button.dataset.layout === this.layout));
    this.updateSeriesPanel();
    this.referenceLines?.changed(null); // lines from viewports now hidden go, shown ones come
  }

  toggleMaximize(index) {
    this.maximized = this.maximized === null && LAYOUTS[this.layout] > 1 ? index : null;
    this.activeIndex = index;
    this.applyLayout();
  }

  activate(index) {
    if (index === this.activeIndex) return;
    this.activeIndex = index;
    this.applyLayout();
    this.updateToolbar();
  }

  onViewportChange(viewport) {
    if (viewport === this.active) this.updateToolbar();
    this.priors?.follow(viewport);
    this.referenceLines?.changed(viewport);
    this.hanging?.follow(viewport);
    if (viewport === this.active) this.keyImages?.render();
  }

  // ---- toolbar ------------------------------------------------------------------------------

  setTool(tool) {
    for (const vp of this.viewports) this.interactions[vp.index].cancel();
    this.tool = tool;
    this.grid.dataset.tool = tool;
    for (const button of document.querySelectorAll('[data-tool]')) button.setAttribute('aria-pressed', String(button.dataset.tool === tool));
  }

  applyPreset(id) {
    const vp = this.active;
    if (!vp.series) return;
    if (id === 'default') {
      vp.defaultWindow();
      return;
    }
    const preset = CT_PRESETS.find((p) => p.id === id);
    if (preset) vp.setWindow(preset.center, preset.width);
  }

  bindToolbar() {
    for (const button of document.querySelectorAll('[data-tool]')) button.addEventListener('click', () => this.setTool(button.dataset.tool));
    for (const button of document.querySelectorAll('[data-layout]')) button.addEventListener('click', () => this.setLayout(button.dataset.layout));
    const actions = {
      invert: () => this.active.toggleInvert(),
      fit: () => this.active.fit(),
      'one-to-one': () => this.active.oneToOne(),
      reset: () => this.active.reset(),
      rotate: () => this.active.rotate(),
      'flip-h': () => this.active.flip(true),
      'flip-v': () => this.active.flip(false),
      cine: () => this.active.toggleCine(),
      clear: () => this.active.clearMeasurements(),
      tags: () => this.showTags(),
      download: () => this.downloadStudy(),
      export: () => this.exportPng(),
      help: () => showHelp(),
    };
    for (const button of document.querySelectorAll('[data-action]')) {
      button.addEventListener('click', () => {
        const action = actions[button.dataset.action];
        if (action && (this.active.series || ['help', 'download'].includes(button.dataset.action))) action();
      });
    }
    const preset = document.getElementById('wl-preset');
    preset.addEventListener('change', () => {
      if (preset.value) this.applyPreset(preset.value);
      preset.value = '';
      // Give the arrow keys back to stack scrolling.
      preset.blur();
    });
    const fps = document.getElementById('cine-fps');
    fps.addEventListener('change', () => {
      this.active.setFps(fps.value);
      fps.blur();
    });
    document.getElementById('viewer-back').addEventListener('click', () => this.hooks.onBack());
    this.setTool('wl');
  }

  updateToolbar() {
    const vp = this.active;
    document.querySelector('[data-action="invert"]').setAttribute('aria-pressed', String(vp.view.invert));
    document.querySelector('[data-action="cine"]').setAttribute('aria-pressed', String(vp.cine.playing));
    const fps = document.getElementById('cine-fps');
    if (document.activeElement !== fps) fps.value = String(vp.cine.fps);
    this.updateSeriesPanel();
  }

  // ---- keyboard -----------------------------------------------------------------------------

  onKeyDown(event) {
    // Not behind a dialog or the sign-in form.
    if (!this.isShown || document.querySelector('dialog[open]') || document.body.dataset.signIn) return;
    const target = event.target;
    if (target instanceof HTMLElement && (target.isContentEditable || (['INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName) && target.type !== 'range'))) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    // One table (keyboard.js) says what each key does and fills the help overlay.
    const shortcut = shortcutFor(event.key);
    if (!shortcut) return;
    shortcut.run(this, this.active, event.key);
    event.preventDefault();
  }

  /** Esc: drop the measurement being drawn, else stop cine, else restore, else W/L. */
  escape(vp) {
    if (this.interactions[vp.index].cancel()) return;
    if (vp.cine.playing) vp.stopCine();
    else if (this.maximized !== null) this.toggleMaximize(vp.index);
    else this.setTool('wl');
  }

  /** ←/→: the previous/next series of the study in the active viewport. */
  stepSeries(delta) {
    if (!this.seriesInfo.length) return;
    const uids = this.seriesInfo.map((s) => text(s, TAG.SeriesInstanceUID));
    const at = uids.indexOf(this.active.series?.seriesUid);
    const next = Math.min(Math.max(0, at + delta), uids.length - 1);
    if (next !== at) this.loadSeriesInto(this.activeIndex, uids[next]);
  }

  // ---- dialogs, download, export ---------------------------------------------------------------

  bindDialogs() {
    for (const dialog of document.querySelectorAll('dialog')) {
      dialog.querySelector('[data-close]')?.addEventListener('click', () => dialog.close());
      dialog.addEventListener('click', (event) => {
        if (event.target === dialog) dialog.close();
      });
    }
  }

  showTags() {
    this.tagBrowser.show(this.active.entry?.meta ?? null);
  }

  async downloadStudy() {
    if (!this.studyUid) return;
    const studyUid = this.studyUid;
    const button = document.querySelector('[data-action="download"]');
    button.disabled = true;
    try {
      const metadata = new Map();
      await Promise.all(
        this.seriesInfo.map(async (s) => {
          const uid = text(s, TAG.SeriesInstanceUID);
          metadata.set(uid, (await this.getSeries(uid)).metadata);
        }),
      );
      const { blob, count } = await studyZip(this.client, studyUid, metadata, (stage, bytes) => {
        showStatus(stage === 'zip' ? t('download.zipping') : t('download.preparing', { mb: formatNumber(bytes / 1048576, 1) }), 'info', 0);
      });
      saveBlob(blob, zipFileName(this.study ?? {}));
      showStatus(t('download.done', { n: count }));
    } catch (error) {
      showStatus(t('download.failed', { error: error.message }), 'error', 10000);
    } finally {
      button.disabled = false;
    }
  }

  async exportPng() {
    const vp = this.active;
    const blob = await vp.exportPng();
    const meta = vp.entry?.meta ?? {};
    const name = [text(meta, TAG.PatientID), `S${text(meta, TAG.SeriesNumber)}`, `IM${vp.imageIndex + 1}`].filter(Boolean).join('_').replace(/[^A-Za-z0-9._-]+/g, '_');
    saveBlob(blob, `${name || 'image'}.png`);
  }

  /** Re-render texts after a language switch. */
  relabel() {
    if (this.study) this.renderHeader();
    this.report.relabel();
    renderHelp();
    this.hanging.relabel();
    const loaded = new Map(this.viewports.filter((vp) => vp.series).map((vp) => [vp.series.seriesUid, vp.series]));
    this.seriesPanel.relabel(this.seriesInfo, loaded);
    for (const vp of this.viewports) {
      vp.updateProgress();
      for (const list of vp.measurements.values()) for (const m of list) vp.evaluate(m);
      vp.render();
    }
  }
}
