// The clinician's view (issue #14): a study opened from the EMR link by someone who does
// not read images shows its signed report first, as the printed report did with film:
// the department's header, who the patient is and which study, the status (final, or
// amended, clearly, with the earlier version one click away), who signed and when,
// findings and conclusion, the key images, the printable PDF, and "Open full study".
//
// Read-only: the report comes from the FHIR DiagnosticReport search
// (/fhir/DiagnosticReport?study=ImagingStudy/<uid>&status=final,amended, the same API an
// EMR uses); the key images are the report's `media` (SOP Instance UIDs), else the study's
// newest Key Object Selection; the PDF is the report's Encapsulated PDF (`presentedForm`).

import { TAG, patientName, text, values } from './dicomjson.js';
import { RENDERED_ACCEPT } from './dicomweb.js';
import { fetchPdf, pdfFrame } from './documents.js';
import { formatDicomDate, formatSex, t } from './i18n.js';

const FINDINGS_URL = 'urn:minipacs:fhir:StructureDefinition/report-findings';
const AMENDS_SYSTEM = 'urn:minipacs:report-amends';
const KOS = '1.2.840.10008.5.1.4.1.1.88.59';
const EVIDENCE = '0040A375';
const REFERENCED_SERIES = '00081115';
const REFERENCED_SOP = '00081199';
const REFERENCED_SOP_INSTANCE = '00081155';
const MAX_KEY_IMAGES = 8;

function element(tag, className, content = '') {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (content) el.textContent = content;
  return el;
}

function isoToLocal(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const pad = (n) => String(n).padStart(2, '0');
  const day = formatDicomDate(`${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}`);
  return `${day} ${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** The id of the report this one amends (FHIR R4 has no element: an identifier names it). */
export function amendsId(report) {
  return (report.identifier ?? []).find((i) => i.system === AMENDS_SYSTEM)?.value ?? null;
}

/**
 * The report to show among a study's signed ones: the newest that no other amends.
 * @param {object[]} reports DiagnosticReport resources, status final or amended
 */
export function currentReport(reports) {
  const replaced = new Set(reports.map(amendsId).filter(Boolean));
  const stamp = (r) => r.issued ?? r.meta?.lastUpdated ?? '';
  return reports.filter((r) => !replaced.has(r.id)).sort((a, b) => stamp(b).localeCompare(stamp(a)))[0] ?? null;
}

export class ReportView {
  /**
   * @param {import('./dicomweb.js').DicomWebClient} client
   * @param {HTMLElement} section the page (#report-view)
   * @param {{onOpenStudy: (studyUid: string) => void}} hooks
   */
  constructor(client, section, hooks) {
    this.client = client;
    this.section = section;
    this.hooks = hooks;
    this.studyUid = null;
    this.report = null;
    this.state = 'idle'; // idle | loading | shown | none | failed
    this.urls = [];
    this.token = 0;
  }

  fhirUrl(path) {
    return new URL(`../fhir/${path}`, window.location.href).href;
  }

  async fhir(path) {
    const response = await this.client.request(this.fhirUrl(path), 'application/fhir+json');
    return response.json();
  }

  clear() {
    this.token++;
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
    this.section.replaceChildren();
    this.report = null;
  }

  /**
   * Show the study's current signed report. Resolves false (nothing shown) when the study
   * has no final or amended report yet; rejects when the server refused or failed.
   */
  async show(studyUid) {
    this.clear();
    const token = this.token;
    this.studyUid = studyUid;
    this.state = 'loading';
    this.section.append(element('p', 'rv-loading', t('viewer.loading')));
    const query = new URLSearchParams({ study: `ImagingStudy/${studyUid}`, status: 'final,amended' });
    const [bundle, studies] = await Promise.all([
      this.fhir(`DiagnosticReport?${query}`),
      this.client.searchStudies({ StudyInstanceUID: studyUid }).then((r) => r.items),
    ]);
    if (token !== this.token) return false;
    const reports = (bundle.entry ?? []).map((e) => e.resource).filter(Boolean);
    const report = currentReport(reports);
    if (!report) {
      this.clear();
      this.state = 'none';
      return false;
    }
    this.all = reports;
    this.study = studies[0] ?? {};
    await this.render(report, token);
    return true;
  }

  /** Show another version of the report (an earlier one an amendment corrects). */
  async showVersion(id) {
    const report = this.all?.find((r) => r.id === id) ?? (await this.fhir(`DiagnosticReport/${encodeURIComponent(id)}`));
    this.clear();
    await this.render(report, this.token);
  }

  async render(report, token) {
    this.report = report;
    const s = this.study;
    const page = element('article', 'rv-page');
    page.dataset.testid = 'rv-page';
    const head = element('header', 'rv-head');
    head.append(
      element('div', 'rv-hospital', text(s, TAG.InstitutionName) || t('reportView.department')),
      element('h1', 'rv-title', t('reportView.title')),
    );
    page.append(head);

    const ident = element('dl', 'rv-ident');
    const rows = [
      ['reportView.patient', patientName(s)],
      ['reportView.patientId', text(s, TAG.PatientID)],
      ['reportView.birthSex', [formatDicomDate(text(s, TAG.PatientBirthDate)), formatSex(text(s, TAG.PatientSex))].filter(Boolean).join(' · ')],
      ['reportView.study', [text(s, TAG.StudyDescription), values(s, TAG.ModalitiesInStudy).join('/')].filter(Boolean).join(' · ')],
      ['reportView.studyDate', formatDicomDate(text(s, TAG.StudyDate))],
      ['reportView.accession', text(s, TAG.AccessionNumber)],
    ];
    for (const [key, value] of rows) {
      if (!value) continue;
      ident.append(element('dt', '', t(key)), element('dd', '', value));
    }
    page.append(ident);

    const status = element('div', `rv-status rv-status-${report.status}`);
    status.dataset.testid = 'rv-status';
    status.dataset.status = report.status;
    status.append(element('strong', '', t(`reportView.status.${report.status}`)));
    const signer = report.resultsInterpreter?.[0]?.display ?? '';
    status.append(element('span', 'rv-signer', t('reportView.signedBy', { name: signer, time: isoToLocal(report.issued) })));
    const earlier = amendsId(report);
    if (earlier) {
      const button = element('button', 'rv-earlier', t('reportView.earlier', { id: earlier }));
      button.type = 'button';
      button.dataset.testid = 'rv-earlier';
      button.addEventListener('click', () => this.showVersion(earlier).catch((error) => this.hooks.onError(error)));
      status.append(button);
    }
    const replacedBy = (this.all ?? []).find((r) => amendsId(r) === report.id);
    if (replacedBy) {
      status.classList.add('rv-superseded');
      const button = element('button', 'rv-current', t('reportView.superseded', { id: replacedBy.id }));
      button.type = 'button';
      button.dataset.testid = 'rv-current';
      button.addEventListener('click', () => this.showVersion(replacedBy.id).catch((error) => this.hooks.onError(error)));
      status.append(button);
    }
    page.append(status);

    const findings = (report.extension ?? []).find((e) => e.url === FINDINGS_URL)?.valueString ?? '';
    for (const [key, value, testid] of [['reportView.findings', findings, 'rv-findings'], ['reportView.conclusion', report.conclusion ?? '', 'rv-conclusion']]) {
      if (!value) continue;
      const block = element('section', 'rv-block');
      block.append(element('h2', '', t(key)));
      const body = element('p', 'rv-text', value);
      body.dataset.testid = testid;
      block.append(body);
      page.append(block);
    }

    const keys = element('section', 'rv-block rv-key-images');
    keys.append(element('h2', '', t('reportView.keyImages')));
    const strip = element('div', 'rv-key-strip');
    strip.dataset.testid = 'rv-key-images';
    keys.append(strip);
    page.append(keys);

    const actions = element('div', 'rv-actions');
    const open = element('button', 'primary', t('reportView.openStudy'));
    open.type = 'button';
    open.dataset.testid = 'rv-open-study';
    open.addEventListener('click', () => this.hooks.onOpenStudy(this.studyUid));
    actions.append(open);
    const pdfButton = element('button', '', t('reportView.pdf'));
    pdfButton.type = 'button';
    pdfButton.dataset.testid = 'rv-pdf';
    pdfButton.disabled = !report.presentedForm?.length;
    actions.append(pdfButton);
    page.prepend(actions);
    const pdfHolder = element('div', 'rv-pdf-holder');
    page.append(pdfHolder);
    pdfButton.addEventListener('click', () => this.showPdf(report, pdfHolder).catch((error) => this.hooks.onError(error)));

    this.section.replaceChildren(page);
    this.state = 'shown';
    await this.showKeyImages(report, strip, token);
  }

  /** Instances of the study, by SOP Instance UID (series UID and SOP class of each). */
  async studyInstances() {
    const url = this.client.url(`studies/${encodeURIComponent(this.studyUid)}/instances`, { includefield: '00080016' });
    const { items } = await this.client.json(url);
    return new Map(items.map((m) => [text(m, TAG.SOPInstanceUID), m]));
  }

  /** The report's key images, else those of the study's newest Key Object Selection. */
  async keyImageRefs(report, instances) {
    const fromReport = (report.media ?? [])
      .map((m) => String(m.link?.identifier?.value ?? '').replace(/^urn:oid:/, ''))
      .filter((uid) => instances.has(uid));
    if (fromReport.length) return fromReport;
    const documents = [...instances.values()].filter((m) => text(m, TAG.SOPClassUID) === KOS);
    let newest = null;
    for (const doc of documents) {
      const metadata = await this.client.seriesMetadata(this.studyUid, text(doc, TAG.SeriesInstanceUID));
      for (const m of metadata.filter((x) => text(x, TAG.SOPClassUID) === KOS)) {
        const stamp = text(m, '00080023') + text(m, '00080033');
        if (!newest || stamp > newest.stamp) newest = { stamp, meta: m };
      }
    }
    if (!newest) return [];
    const uids = [];
    for (const evidence of values(newest.meta, EVIDENCE)) {
      for (const series of values(evidence, REFERENCED_SERIES)) {
        for (const ref of values(series, REFERENCED_SOP)) uids.push(text(ref, REFERENCED_SOP_INSTANCE));
      }
    }
    return uids.filter((uid) => instances.has(uid));
  }

  async showKeyImages(report, strip, token) {
    const instances = await this.studyInstances();
    const uids = (await this.keyImageRefs(report, instances)).slice(0, MAX_KEY_IMAGES);
    if (token !== this.token) return;
    if (!uids.length) {
      strip.append(element('p', 'rv-none', t('reportView.noKeyImages')));
      return;
    }
    await Promise.all(uids.map(async (uid) => {
      const seriesUid = text(instances.get(uid), TAG.SeriesInstanceUID);
      const url = this.client.url(`studies/${encodeURIComponent(this.studyUid)}/series/${encodeURIComponent(seriesUid)}/instances/${encodeURIComponent(uid)}/rendered`, { viewport: '384,384' });
      const img = element('img', 'rv-key-image');
      img.alt = t('reportView.keyImage');
      img.dataset.sopInstanceUid = uid;
      strip.append(img);
      try {
        const blob = await (await this.client.request(url, RENDERED_ACCEPT)).blob();
        if (token !== this.token) return;
        const objectUrl = URL.createObjectURL(blob);
        this.urls.push(objectUrl);
        await new Promise((resolve) => {
          img.addEventListener('load', resolve, { once: true });
          img.addEventListener('error', resolve, { once: true });
          img.src = objectUrl;
        });
      } catch (error) {
        img.replaceWith(element('p', 'rv-none', t('documents.failed', { error: error.message })));
      }
    }));
  }

  /** The report's Encapsulated PDF, in the page. */
  async showPdf(report, holder) {
    const url = report.presentedForm?.[0]?.url ?? '';
    const sopUid = /\/instances\/([0-9.]+)\/(?:rendered|bulkdata\/)/.exec(url)?.[1];
    if (!sopUid) return;
    const instances = await this.studyInstances();
    const meta = instances.get(sopUid);
    if (!meta) throw new Error(t('reportView.pdfMissing', { uid: sopUid }));
    const blob = await fetchPdf(this.client, this.studyUid, text(meta, TAG.SeriesInstanceUID), sopUid, meta);
    const objectUrl = URL.createObjectURL(blob);
    this.urls.push(objectUrl);
    const download = element('a', '', t('documents.download'));
    download.href = objectUrl;
    download.download = `report-${report.id}.pdf`;
    holder.replaceChildren(download, pdfFrame(objectUrl, t('reportView.pdf'), blob.head));
  }

  /** Re-render after a language switch. */
  relabel() {
    if (!this.report) return;
    const report = this.report;
    this.clear();
    this.render(report, this.token).catch((error) => this.hooks.onError(error));
  }

  /** For the test hooks. */
  snapshot() {
    const r = this.report;
    const images = [...this.section.querySelectorAll('.rv-key-image')];
    return {
      state: this.state,
      studyUid: this.studyUid,
      id: r?.id ?? null,
      status: r?.status ?? null,
      conclusion: this.section.querySelector('[data-testid=rv-conclusion]')?.textContent ?? null,
      keyImages: images.map((img) => ({ sop: img.dataset.sopInstanceUid, loaded: img.complete && img.naturalWidth > 0 })),
      pdfUrl: this.section.querySelector('.pdf-frame')?.src ?? null,
      pdfHead: this.section.querySelector('.pdf-frame')?.dataset.head ?? null,
    };
  }
}
