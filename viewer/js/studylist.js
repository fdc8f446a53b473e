// The study list: search form → QIDO-RS SearchForStudies → table, newest first, paged.

import { TAG, number, patientName, text, values } from './dicomjson.js';
import { formatDicomDate, formatDicomTime, formatSex, t } from './i18n.js';

export const PAGE_SIZE = 25;

function dicomDate(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}`;
}

function daysAgo(days, today = new Date()) {
  const d = new Date(today);
  d.setDate(d.getDate() - days);
  return d;
}

/** StudyDate matching value (PS3.4 §C.2.2.2.5 range matching) for a date-range choice. */
export function studyDateRange(choice, from = '', to = '', today = new Date()) {
  switch (choice) {
    case 'today':
      return dicomDate(today);
    case '7d':
      return `${dicomDate(daysAgo(6, today))}-${dicomDate(today)}`;
    case '30d':
      return `${dicomDate(daysAgo(29, today))}-${dicomDate(today)}`;
    case 'custom': {
      const a = from.replaceAll('-', '');
      const b = to.replaceAll('-', '');
      if (!a && !b) return '';
      return a === b ? a : `${a}-${b}`;
    }
    default:
      return '';
  }
}

/** The name box's text as a PatientName key: wildcard at the end, fuzzy matching does the rest. */
export function patientNameQuery(input) {
  const trimmed = input.trim().replace(/\s+/g, ' ');
  if (!trimmed) return '';
  return /[*?]$/.test(trimmed) ? trimmed : `${trimmed}*`;
}

function studySortKey(study) {
  return `${text(study, TAG.StudyDate)}${text(study, TAG.StudyTime).padEnd(6, '0')}`;
}

/** Newest first (StudyDate then StudyTime, descending). */
export function sortNewestFirst(studies) {
  return [...studies].sort((a, b) => studySortKey(b).localeCompare(studySortKey(a)));
}

export class StudyList {
  /**
   * @param {import('./dicomweb.js').DicomWebClient} client
   * @param {(studyUid:string) => void} onOpen
   * @param {(message:string) => void} onError
   */
  constructor(client, onOpen, onError) {
    this.client = client;
    this.onOpen = onOpen;
    this.onError = onError;
    this.page = 0;
    this.studies = [];
    this.hasMore = false;
    this.mode = 'search';
    this.renderedKey = null;
    this.aborter = null;
    this.form = document.getElementById('search-form');
    this.fields = {
      name: document.getElementById('search-name'),
      patientId: document.getElementById('search-patient-id'),
      accession: document.getElementById('search-accession'),
      dateRange: document.getElementById('search-date-range'),
      from: document.getElementById('search-date-from'),
      to: document.getElementById('search-date-to'),
      modality: document.getElementById('search-modality'),
    };
    this.rows = document.getElementById('study-rows');
    this.count = document.getElementById('result-count');
    this.warning = document.getElementById('result-warning');
    this.prev = document.getElementById('page-prev');
    this.next = document.getElementById('page-next');
    this.pageLabel = document.getElementById('page-number');
    this.title = document.getElementById('list-title');
    this.mostRecent = 0;
    this.extraModalities = [];

    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.search(0);
    });
    document.getElementById('search-clear').addEventListener('click', () => {
      this.resetForm();
      this.search(0);
    });
    this.fields.dateRange.addEventListener('change', () => {
      this.updateCustomDates();
      this.search(0);
    });
    this.fields.modality.addEventListener('change', () => this.search(0));
    this.prev.addEventListener('click', () => this.search(Math.max(0, this.page - 1)));
    this.next.addEventListener('click', () => this.search(this.page + 1));
    this.rows.addEventListener('click', (event) => {
      const row = event.target.closest('tr[data-study-uid]');
      if (row) this.onOpen(row.dataset.studyUid);
    });
    this.rows.addEventListener('keydown', (event) => {
      const row = event.target.closest('tr[data-study-uid]');
      if (row && event.key === 'Enter') this.onOpen(row.dataset.studyUid);
    });
    this.updateCustomDates();
  }

  resetForm() {
    this.form.reset();
    this.mostRecent = 0;
    this.removeExtraModalities();
    this.updateCustomDates();
  }

  updateCustomDates() {
    const custom = this.fields.dateRange.value === 'custom';
    for (const input of [this.fields.from, this.fields.to]) input.closest('label').hidden = !custom;
  }

  removeExtraModalities() {
    for (const option of this.fields.modality.querySelectorAll('option[data-extra]')) option.remove();
  }

  /** Fill the form from an EMR PATIENT link and search. */
  showPatient(route) {
    this.resetForm();
    this.fields.patientId.value = route.patientId;
    this.issuer = route.issuer;
    if (route.dateFrom || route.dateTo) {
      this.fields.dateRange.value = 'custom';
      this.fields.from.value = route.dateFrom ? `${route.dateFrom.slice(0, 4)}-${route.dateFrom.slice(4, 6)}-${route.dateFrom.slice(6, 8)}` : '';
      this.fields.to.value = route.dateTo ? `${route.dateTo.slice(0, 4)}-${route.dateTo.slice(4, 6)}-${route.dateTo.slice(6, 8)}` : '';
      this.updateCustomDates();
    }
    if (route.modalities.length) {
      const value = route.modalities.join(',');
      if (![...this.fields.modality.options].some((o) => o.value === value)) {
        const option = new Option(value, value);
        option.dataset.extra = 'true';
        this.fields.modality.append(option);
      }
      this.fields.modality.value = value;
    }
    this.mostRecent = route.mostRecent;
    return this.search(0);
  }

  filter() {
    const f = this.fields;
    return {
      PatientName: patientNameQuery(f.name.value),
      PatientID: f.patientId.value.trim(),
      IssuerOfPatientID: f.patientId.value.trim() ? this.issuer ?? '' : '',
      AccessionNumber: f.accession.value.trim(),
      StudyDate: studyDateRange(f.dateRange.value, f.from.value, f.to.value),
      modalities: f.modality.value ? f.modality.value.split(',') : [],
    };
  }

  /**
   * Run the search for page `page` (0-based). Asks one more than a page to know whether a
   * next page exists; several modalities run one query each, merged (QIDO matches one value).
   */
  async search(page) {
    this.mode = 'search';
    this.title.textContent = t('search.title');
    this.aborter?.abort();
    const aborter = new AbortController();
    this.aborter = aborter;
    const { modalities, ...filter } = this.filter();
    const pageSize = this.mostRecent || PAGE_SIZE;
    const base = { ...filter, fuzzymatching: 'true' };
    this.count.textContent = t('search.searching');
    this.warning.hidden = true;
    try {
      let studies;
      let warnings;
      if (modalities.length <= 1) {
        const query = { ...base, ModalitiesInStudy: modalities[0], limit: pageSize + 1, offset: page * pageSize };
        let result = await this.client.searchStudies(query, aborter.signal);
        if (!result.items.length && query.PatientID && !query.IssuerOfPatientID) {
          // Not a hospital patient ID: try it as a national ID (CCCD) or insurance number,
          // which archives keep in OtherPatientIDsSequence (PS3.18 sequence matching).
          const { PatientID, ...rest } = query;
          result = await this.client.searchStudies({ ...rest, 'OtherPatientIDsSequence.PatientID': PatientID }, aborter.signal);
        }
        studies = result.items;
        warnings = [result.warning];
      } else {
        const results = await Promise.all(
          modalities.map((m) => this.client.searchStudies({ ...base, ModalitiesInStudy: m, limit: (page + 1) * pageSize + 1, offset: 0 }, aborter.signal)),
        );
        const byUid = new Map();
        for (const result of results) for (const study of result.items) byUid.set(text(study, TAG.StudyInstanceUID), study);
        studies = sortNewestFirst([...byUid.values()]).slice(page * pageSize, (page + 1) * pageSize + 1);
        warnings = results.map((r) => r.warning);
      }
      if (aborter.signal.aborted) return;
      this.page = page;
      this.hasMore = !this.mostRecent && studies.length > pageSize;
      this.studies = sortNewestFirst(studies).slice(0, pageSize);
      this.showWarning(warnings.filter(Boolean).join('; '));
      this.render();
    } catch (error) {
      if (error.name === 'AbortError') return;
      this.count.textContent = '';
      this.onError(error);
    }
  }

  /** Show studies found for an EMR STUDY link (no paging). */
  showLinked(studies) {
    this.aborter?.abort();
    this.mode = 'linked';
    this.title.textContent = t('search.linked');
    this.page = 0;
    this.hasMore = false;
    this.studies = sortNewestFirst(studies);
    this.showWarning('');
    this.render();
  }

  showWarning(warning) {
    this.warning.hidden = !warning;
    this.warning.textContent = warning ? t('search.truncated', { warning }) : '';
  }

  render() {
    const from = this.page * PAGE_SIZE + 1;
    const to = this.page * PAGE_SIZE + this.studies.length;
    if (!this.studies.length) {
      this.count.textContent = this.mode === 'linked' ? t('search.linkedNone') : t('search.noResults');
    } else {
      this.count.textContent = t(this.hasMore ? 'search.countMore' : 'search.count', { from, to });
    }
    this.count.dataset.count = String(this.studies.length);
    this.prev.disabled = this.page === 0 || this.mode === 'linked';
    this.next.disabled = !this.hasMore;
    this.pageLabel.textContent = t('search.page', { page: this.page + 1 });
    this.rows.replaceChildren(...this.studies.map((study) => this.row(study)));
  }

  row(study) {
    const tr = document.createElement('tr');
    tr.dataset.testid = 'study-row';
    tr.dataset.studyUid = text(study, TAG.StudyInstanceUID);
    tr.tabIndex = 0;
    const modalities = values(study, TAG.ModalitiesInStudy).join(', ');
    const seriesCount = number(study, TAG.NumberOfStudyRelatedSeries);
    const imageCount = number(study, TAG.NumberOfStudyRelatedInstances);
    const cells = [
      [patientName(study), 'name'],
      [text(study, TAG.PatientID), 'patient-id'],
      [formatDicomDate(text(study, TAG.PatientBirthDate)), 'birth-date'],
      [formatSex(text(study, TAG.PatientSex)), 'sex'],
      [`${formatDicomDate(text(study, TAG.StudyDate))} ${formatDicomTime(text(study, TAG.StudyTime))}`.trim(), 'study-date'],
      [modalities, 'modality'],
      [text(study, TAG.StudyDescription), 'description'],
      [text(study, TAG.AccessionNumber), 'accession'],
      [`${seriesCount ?? '–'} / ${imageCount ?? '–'}`, 'counts'],
    ];
    for (const [value, column] of cells) {
      const td = document.createElement('td');
      td.textContent = value;
      td.dataset.column = column;
      tr.append(td);
    }
    return tr;
  }

  /** Re-render texts after a language switch. */
  relabel() {
    this.title.textContent = this.mode === 'linked' ? t('search.linked') : t('search.title');
    if (this.count.textContent !== t('search.searching')) this.render();
  }
}
