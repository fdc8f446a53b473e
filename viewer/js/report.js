// The report panel (issue #14, "The report"): the radiologist writes the study's report
// beside the images. It reads and writes FHIR R4 DiagnosticReport at {server}/fhir, the
// same API any EMR calls (docs/emr-integration.md): 'registered' is a draft, findings
// travel in an extension, the conclusion in `conclusion`, key images in `media`, the order
// in `basedOn`. Status final signs (the server stores the PDF and SR in the study);
// status amended on a signed report makes a new version, the earlier one stays readable.
//
// Drafts are never lost: every keystroke is kept in localStorage at once (per user and
// study), and the draft goes to the server ~2 s after typing stops and when the page is
// hidden or closed (fetch keepalive). Each save names the version it builds on (If-Match):
// a 412 means another tab or person saved in between, and the panel says so instead of
// overwriting. Reopening the study shows the newest: the server's, or the local copy when
// it is newer and was never saved (the panel says which).

import { TAG, text } from './dicomjson.js';
import { t } from './i18n.js';
import { localIsNewest, localKey, readLocal, writeLocal } from './reportdrafts.js';
import { EDITABLE, amendsOf, diagnosticReport, fhirRequest, findingsOf, keyImagesOf, versionOf } from './reportfhir.js';
import { renderKeyImages, renderOrder, renderTemplates, renderVersions, statusText } from './reportview.js';

const BODY_PART = '00180015';
const AUTOSAVE_MS = 2000;
const NON_IMAGE = ['SR', 'KO', 'DOC', 'PR'];

export class ReportPanel {
  /**
   * @param {import('./studyviewer.js').StudyViewer} viewer
   * @param {HTMLElement} element the panel (aside) beside the viewports
   * @param {HTMLButtonElement} button the toolbar button that shows and hides it
   * @param {() => ({name: string, role: string, actions?: string[]} | null)} user
   */
  constructor(viewer, element, button, user) {
    this.viewer = viewer;
    this.element = element;
    this.button = button;
    this.user = user;
    this.fhirBase = new URL('../fhir', window.location.href).href;
    this.reset();
    this.el = (name) => element.querySelector(`[data-report=${name}]`);
    button.addEventListener('click', () => this.toggle());
    this.el('findings').addEventListener('input', () => this.edited());
    this.el('conclusion').addEventListener('input', () => this.edited());
    this.el('template').addEventListener('change', () => this.applyTemplate(this.el('template').value));
    this.el('attach').addEventListener('click', () => this.attachCurrentImage());
    this.el('preliminary').addEventListener('click', () => this.save('preliminary'));
    this.el('sign').addEventListener('click', () => this.sign());
    this.el('amend').addEventListener('click', () => this.startAmendment());
    this.el('reload').addEventListener('click', () => this.takeServerVersion());
    this.el('overwrite').addEventListener('click', () => this.overwrite());
    this.el('back').addEventListener('click', () => this.showVersion(null));
    // Closing or hiding the page: the draft goes to the server now (keepalive survives unload).
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'hidden') this.flush();
    });
    window.addEventListener('pagehide', () => this.flush());
  }

  reset() {
    clearTimeout(this.timer);
    this.timer = 0;
    this.studyUid = null;
    this.loadToken = (this.loadToken ?? 0) + 1;
    this.reports = []; // the study's DiagnosticReports, newest first
    this.current = null; // the one being written or last signed
    this.baseVersion = 0; // the server's version the text builds on (If-Match)
    this.viewing = null; // an earlier version shown read-only
    this.order = null;
    this.templates = [];
    this.suggested = null;
    this.templateId = '';
    this.templateText = null;
    this.keyImages = []; // [{sop, series, label}]
    this.mode = 'edit'; // edit | read | amend
    this.dirty = false;
    this.saving = null;
    this.notice = '';
    this.conflict = false;
    this.savedAt = null;
    this.loaded = false;
  }

  get shown() {
    return !this.element.hidden;
  }

  get canWrite() {
    const user = this.user();
    if (!user) return false;
    if (Array.isArray(user.actions)) return user.actions.includes('report');
    return ['radiologist', 'admin'].includes(user.role);
  }

  get key() {
    return localKey(this.user()?.name ?? 'anonymous', this.studyUid);
  }

  toggle() {
    this.element.hidden = !this.element.hidden;
    this.button.setAttribute('aria-pressed', String(this.shown));
    if (this.shown && this.viewer.studyUid && this.studyUid !== this.viewer.studyUid) this.load(this.viewer.studyUid);
    // The viewports' size changed.
    window.dispatchEvent(new Event('resize'));
  }

  /** The viewer closed the study: save what is pending, forget it. */
  clear() {
    this.flush();
    this.reset();
    this.render();
  }

  /** The viewer opened a study: read its reports, order and templates when shown. */
  studyOpened(studyUid) {
    if (this.shown && this.studyUid !== studyUid) this.load(studyUid);
  }

  fhir(path, options) {
    return fhirRequest(this.fhirBase, path, options);
  }

  resource(status) {
    return diagnosticReport({
      status,
      studyUid: this.studyUid,
      id: this.current?.id,
      orderId: this.order?.id,
      findings: this.el('findings').value,
      conclusion: this.el('conclusion').value,
      keyImages: this.keyImages.map((k) => k.sop),
    });
  }

  async load(studyUid) {
    this.reset();
    this.studyUid = studyUid;
    const token = this.loadToken;
    this.render();
    const study = this.viewer.study ?? {};
    const [reports, order, templates] = await Promise.all([
      this.fhir(`DiagnosticReport?study=ImagingStudy/${encodeURIComponent(studyUid)}&_count=100`).then((b) => (b.entry ?? []).map((e) => e.resource)),
      this.findOrder(studyUid, text(study, TAG.AccessionNumber)).catch(() => null),
      this.canWrite ? this.findTemplates() : Promise.resolve({ templates: [], suggested: null }),
    ]).catch((error) => {
      this.notice = t('report.loadFailed', { error: error.message });
      return [[], null, { templates: [], suggested: null }];
    });
    if (token !== this.loadToken) return;
    this.reports = reports.sort((a, b) => Number(b.id) - Number(a.id));
    this.order = order;
    this.templates = templates.templates;
    this.suggested = templates.suggested;
    this.current = this.reports[0] ?? null;
    const local = readLocal(this.key);
    const server = this.current;
    const { restore, landed } = localIsNewest(local, server);
    if (restore && this.canWrite) {
      this.fill(local.findings, local.conclusion, local.keyImages ?? []);
      this.mode = local.mode === 'amend' && server && !EDITABLE.includes(server.status) ? 'amend' : 'edit';
      this.baseVersion = local.reportId === server?.id ? local.version : versionOf(server);
      this.dirty = true;
      this.notice = t('report.restoredLocal');
      this.schedule();
    } else {
      if (local && (!local.dirty || landed)) writeLocal(this.key, null);
      this.showServer();
      if (!server && this.suggested !== null) this.applyTemplate(String(this.suggested));
    }
    this.loaded = true;
    await this.describeKeyImages();
    if (token === this.loadToken) this.render();
  }

  async findOrder(studyUid, accession) {
    const byUid = await this.fhir(`ServiceRequest?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${studyUid}`)}`);
    let entry = byUid.entry?.[0];
    if (!entry && accession) entry = (await this.fhir(`ServiceRequest?identifier=${encodeURIComponent(accession)}`)).entry?.[0];
    return entry?.resource ?? null;
  }

  async findTemplates() {
    const series = this.viewer.seriesInfo.find((s) => !NON_IMAGE.includes(text(s, TAG.Modality)));
    let modality = series ? text(series, TAG.Modality) : '';
    let bodyPart = '';
    if (series) {
      const loaded = await this.viewer.getSeries(text(series, TAG.SeriesInstanceUID)).catch(() => null);
      const meta = loaded?.metadata?.[0];
      if (meta) {
        modality = text(meta, TAG.Modality) || modality;
        bodyPart = text(meta, BODY_PART);
      }
    }
    const url = new URL('../report-templates', window.location.href);
    // Code strings as the server takes them (what some modalities send is looser).
    const code = (value) => value.trim().toUpperCase().replace(/[^A-Z0-9_]/g, '_').slice(0, 16);
    url.searchParams.set('modality', code(modality));
    url.searchParams.set('body_part', code(bodyPart));
    const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (!response.ok) return { templates: [], suggested: null };
    return response.json();
  }

  /** The server's current report in the text areas. */
  showServer() {
    const server = this.current;
    this.fill(findingsOf(server), server?.conclusion ?? '', keyImagesOf(server).map((sop) => ({ sop })));
    this.baseVersion = versionOf(server);
    this.mode = server && !EDITABLE.includes(server.status) ? 'read' : this.canWrite ? 'edit' : 'read';
    this.dirty = false;
    this.conflict = false;
    this.savedAt = server ? new Date(server.meta?.lastUpdated ?? Date.now()) : null;
  }

  fill(findings, conclusion, keyImages) {
    this.el('findings').value = findings;
    this.el('conclusion').value = conclusion;
    this.keyImages = keyImages.map((k) => (typeof k === 'string' ? { sop: k } : k));
  }

  // ---- writing ----------------------------------------------------------------------------

  edited() {
    if (this.mode === 'read') return;
    if (this.notice === t('report.restoredLocal')) this.notice = '';
    this.dirty = true;
    this.keepLocal();
    this.schedule();
    this.renderStatus();
  }

  keepLocal() {
    writeLocal(this.key, {
      findings: this.el('findings').value,
      conclusion: this.el('conclusion').value,
      keyImages: this.keyImages.map((k) => k.sop),
      reportId: this.current?.id ?? null,
      version: this.baseVersion,
      mode: this.mode,
      dirty: this.dirty,
      at: Date.now(),
    });
  }

  schedule() {
    clearTimeout(this.timer);
    // An amendment is signed in one step: it stays in this browser until then.
    if (this.mode !== 'edit' || this.conflict) return;
    this.timer = setTimeout(() => this.save(null), AUTOSAVE_MS);
  }

  /** Save now if anything is pending (page hidden or closed, study closed). */
  flush() {
    if (this.dirty && this.mode === 'edit' && !this.conflict && this.studyUid) this.save(null, true);
  }

  /**
   * Write the report: `status` null keeps it as it is (a draft unless preliminary);
   * 'preliminary' or 'final' changes it. Resolves to the saved resource, or null.
   */
  async save(status, keepalive = false) {
    clearTimeout(this.timer);
    if (!this.studyUid || !this.canWrite || this.mode === 'read' || this.conflict) return null;
    if (this.saving) {
      // One write at a time: the next builds on the version the running one makes.
      const studyUid = this.studyUid;
      await this.saving.catch(() => {});
      if (studyUid !== this.studyUid || this.conflict) return null;
      if (!status && !this.dirty) return this.current;
    }
    const wanted = status ?? (this.current && EDITABLE.includes(this.current.status) ? this.current.status : 'registered');
    const sent = { findings: this.el('findings').value, conclusion: this.el('conclusion').value };
    const studyUid = this.studyUid;
    this.saving = (async () => {
      const body = this.resource(wanted);
      return this.current
        ? this.fhir(`DiagnosticReport/${this.current.id}`, { method: 'PUT', body, version: this.baseVersion, keepalive })
        : this.fhir('DiagnosticReport', { method: 'POST', body, keepalive });
    })();
    this.renderStatus(t('report.saving'));
    try {
      const saved = await this.saving;
      if (studyUid !== this.studyUid) return saved;
      this.accept(saved);
      // Typed while it was on its way: that is still to save.
      const changed = this.el('findings').value !== sent.findings || this.el('conclusion').value !== sent.conclusion;
      this.dirty = changed;
      this.keepLocal();
      if (changed) this.schedule();
      // Errors are over; that a local copy was restored stays said until the next study.
      if (this.notice !== t('report.restoredLocal')) this.notice = '';
      this.render();
      return saved;
    } catch (error) {
      if (studyUid !== this.studyUid) return null;
      if (error.status === 412) {
        this.conflict = true;
        this.notice = t('report.conflict');
      } else {
        this.notice = t('report.saveFailed', { error: error.message });
      }
      this.render();
      return null;
    } finally {
      this.saving = null;
    }
  }

  accept(saved) {
    const index = this.reports.findIndex((r) => r.id === saved.id);
    if (index >= 0) this.reports[index] = saved;
    else this.reports.unshift(saved);
    this.reports.sort((a, b) => Number(b.id) - Number(a.id));
    this.current = saved;
    this.baseVersion = versionOf(saved);
    this.savedAt = new Date();
  }

  async sign() {
    if (!this.canWrite) return;
    if (!this.el('conclusion').value.trim()) {
      this.notice = t('report.needsConclusion');
      this.render();
      return;
    }
    if (this.mode === 'amend') {
      await this.signAmendment();
      return;
    }
    const saved = await this.save('final');
    if (saved) {
      this.mode = 'read';
      this.dirty = false;
      writeLocal(this.key, null);
      this.notice = t('report.signed');
      this.render();
    }
  }

  /** Amend: the signed text becomes editable; signing it makes the new (amended) version. */
  startAmendment() {
    if (!this.canWrite || !this.current || EDITABLE.includes(this.current.status)) return;
    this.viewing = null;
    this.showServer();
    this.mode = 'amend';
    this.notice = t('report.amending');
    this.render();
    this.el('findings').focus();
  }

  async signAmendment() {
    const previous = this.current;
    const body = this.resource('amended');
    this.renderStatus(t('report.saving'));
    try {
      const saved = await this.fhir(`DiagnosticReport/${previous.id}`, { method: 'PUT', body, version: this.baseVersion });
      this.accept(saved);
      this.mode = 'read';
      this.dirty = false;
      writeLocal(this.key, null);
      this.notice = t('report.amended', { id: previous.id });
    } catch (error) {
      this.notice = error.status === 412 ? t('report.conflict') : t('report.saveFailed', { error: error.message });
      if (error.status === 412) this.conflict = true;
    }
    this.render();
  }

  /** After a 412: drop this tab's edits and show what the server has now. */
  async takeServerVersion() {
    if (!this.current) return;
    this.current = await this.fhir(`DiagnosticReport/${this.current.id}`);
    this.accept(this.current);
    writeLocal(this.key, null);
    this.showServer();
    this.notice = '';
    await this.describeKeyImages();
    this.render();
  }

  /** After a 412: save this tab's text over the server's newer version, knowingly. */
  async overwrite() {
    if (!this.current) return;
    const server = await this.fhir(`DiagnosticReport/${this.current.id}`);
    if (!EDITABLE.includes(server.status) && this.mode !== 'amend') {
      this.notice = t('report.signedMeanwhile');
      this.render();
      return;
    }
    this.baseVersion = versionOf(server);
    this.conflict = false;
    if (this.mode === 'amend') await this.signAmendment();
    else await this.save(null);
  }

  applyTemplate(id) {
    const template = this.templates.find((x) => String(x.id) === String(id));
    this.templateId = template ? String(template.id) : '';
    if (!template || this.mode === 'read') {
      this.render();
      return;
    }
    // A template replaces an empty field or the previous template's untouched text;
    // text the radiologist wrote is kept, the template added below it.
    for (const field of ['findings', 'conclusion']) {
      const area = this.el(field);
      const untouched = !area.value.trim() || area.value === this.templateText?.[field];
      area.value = untouched ? template[field] : `${area.value.trimEnd()}\n${template[field]}`;
    }
    this.templateText = { findings: template.findings, conclusion: template.conclusion };
    if (this.loaded) this.edited();
    this.render();
  }

  // ---- key images -------------------------------------------------------------------------

  /** Attach the image shown in the active viewport (one click). */
  attachCurrentImage() {
    const viewport = this.viewer.active;
    const sop = viewport?.entry?.sopInstanceUid;
    if (!sop || this.mode === 'read' || this.keyImages.some((k) => k.sop === sop)) return;
    const meta = viewport.entry.meta;
    this.keyImages.push({ sop, series: viewport.series?.seriesUid, label: this.imageLabel(meta) });
    this.edited();
    this.render();
  }

  detach(sop) {
    if (this.mode === 'read') return;
    this.keyImages = this.keyImages.filter((k) => k.sop !== sop);
    this.edited();
    this.render();
  }

  imageLabel(meta) {
    return t('report.imageLabel', { series: text(meta, TAG.SeriesNumber) || '?', image: text(meta, TAG.InstanceNumber) || '?' });
  }

  /** Series and numbers of key images known only by SOP Instance UID (QIDO-RS, one request). */
  async describeKeyImages() {
    const unknown = this.keyImages.filter((k) => !k.series);
    if (!unknown.length || !this.studyUid) return;
    try {
      const found = await this.viewer.client.json(this.viewer.client.url(`studies/${this.studyUid}/instances`, { SOPInstanceUID: unknown.map((k) => k.sop).join(','), includefield: '00200013' }));
      for (const item of found ?? []) {
        const key = this.keyImages.find((k) => k.sop === text(item, TAG.SOPInstanceUID));
        if (key) Object.assign(key, { series: text(item, TAG.SeriesInstanceUID), label: this.imageLabel(item) });
      }
    } catch {
      // Listed by UID then.
    }
  }

  // ---- versions ---------------------------------------------------------------------------

  showVersion(id) {
    this.viewing = id === null ? null : this.reports.find((r) => r.id === id) ?? null;
    if (this.viewing) {
      this.el('findings').value = findingsOf(this.viewing);
      this.el('conclusion').value = this.viewing.conclusion ?? '';
    } else if (this.current) {
      const local = readLocal(this.key);
      if (local?.dirty) this.fill(local.findings, local.conclusion, this.keyImages);
      else this.showServer();
    }
    this.render();
  }

  // ---- showing ----------------------------------------------------------------------------

  renderStatus(override) {
    const status = this.el('status');
    const parts = [this.mode === 'amend' ? t('report.status.amending') : statusText(this.current)];
    const signer = this.current?.resultsInterpreter?.[0]?.display;
    if (override) parts.push(override);
    else if (this.dirty) parts.push(t('report.unsaved'));
    else if (signer && this.mode === 'read') parts.push(t('report.signedBy', { who: signer, time: (this.current.issued ?? '').slice(0, 16).replace('T', ' ') }));
    else if (this.savedAt && this.current) parts.push(t('report.savedAt', { time: this.savedAt.toTimeString().slice(0, 8) }));
    status.textContent = parts.join(' · ');
    status.dataset.status = this.current?.status ?? 'none';
  }

  render() {
    const writable = this.canWrite && !this.viewing && (this.mode === 'edit' || this.mode === 'amend');
    const signedNow = this.current && !EDITABLE.includes(this.current.status);
    this.el('findings').readOnly = !writable;
    this.el('conclusion').readOnly = !writable;
    this.el('template-row').hidden = !writable;
    this.el('attach').disabled = !writable;
    this.el('preliminary').hidden = !this.canWrite || this.mode !== 'edit';
    this.el('preliminary').disabled = !writable || this.conflict;
    this.el('sign').hidden = !this.canWrite || (this.mode === 'read');
    this.el('sign').disabled = !writable || this.conflict;
    this.el('sign').textContent = t(this.mode === 'amend' ? 'report.signAmendment' : 'report.sign');
    this.el('amend').hidden = !this.canWrite || !signedNow || this.mode !== 'read' || !!this.viewing;
    this.el('readonly').hidden = this.canWrite;
    this.el('readonly').textContent = this.canWrite ? '' : t('report.readOnly', { role: t(`role.${this.user()?.role ?? 'anonymous'}`) });
    this.el('conflict').hidden = !this.conflict;
    this.el('notice').hidden = !this.notice;
    this.el('notice').textContent = this.notice;
    this.el('back').hidden = !this.viewing;
    renderTemplates(this.el('template'), this.templates, this.suggested, this.templateId);
    renderOrder(this.el('order'), this.order, this.viewer.study ?? {});
    const thumbnail = (key) => this.viewer.client.url(`studies/${this.studyUid}/series/${key.series}/instances/${key.sop}/thumbnail`);
    renderKeyImages(this.el('key-images'), this.keyImages, thumbnail, writable ? (sop) => this.detach(sop) : null);
    this.el('key-images-empty').hidden = this.keyImages.length > 0;
    renderVersions(this.el('versions'), this.reports, this.viewing?.id, (id) => this.showVersion(id === this.current?.id && !this.viewing ? null : id));
    this.el('versions-box').hidden = this.reports.length < 2;
    this.renderStatus();
  }

  /** Re-render texts after a language switch. */
  relabel() {
    this.render();
  }

  /** What the tests and integrators may read (window.minipacsViewer.report). */
  snapshot() {
    return {
      shown: this.shown,
      loaded: this.loaded,
      studyUid: this.studyUid,
      reportId: this.current?.id ?? null,
      status: this.current?.status ?? null,
      version: this.baseVersion ?? 0,
      mode: this.mode,
      dirty: this.dirty,
      conflict: this.conflict,
      canWrite: this.canWrite,
      notice: this.notice,
      findings: this.el('findings').value,
      conclusion: this.el('conclusion').value,
      keyImages: this.keyImages.map((k) => k.sop),
      templates: this.templates.map((x) => x.name),
      suggested: this.templates.find((x) => x.id === this.suggested)?.name ?? null,
      order: this.order?.id ?? null,
      versions: this.reports.map((r) => ({ id: r.id, status: r.status, amends: amendsOf(r) })),
      viewing: this.viewing?.id ?? null,
    };
  }
}
