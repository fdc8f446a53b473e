// What the report panel (report.js) shows besides its text areas: the template picker,
// the order, the attached key images and the version list. Plain DOM, no state of its own.

import { TAG, text } from './dicomjson.js';
import { formatDicomDate, t } from './i18n.js';
import { amendsOf } from './reportfhir.js';

const ACSN = 'ACSN';

export function statusText(resource) {
  return resource ? t(`report.status.${resource.status}`) : t('report.status.none');
}

export function renderTemplates(select, templates, suggested, chosen) {
  select.replaceChildren(new Option(t('report.template.choose'), ''));
  for (const template of templates) {
    const label = template.id === suggested ? `${template.name} ★` : template.name;
    select.append(new Option(label, String(template.id)));
  }
  select.value = chosen;
}

/** The study's order (a ServiceRequest), or the study's own accession and date without one. */
export function renderOrder(box, order, study) {
  box.replaceChildren();
  const rows = [];
  if (order) {
    const accession = (order.identifier ?? []).find((i) => i.type?.coding?.some((c) => c.code === ACSN))?.value;
    const procedure = order.code?.text ?? order.code?.coding?.map((c) => c.display).filter(Boolean).join(', ');
    const reasons = [...(order.reasonCode ?? []).map((r) => r.text ?? r.coding?.[0]?.display), ...(order.note ?? []).map((n) => n.text).filter((x) => !/^performed as /.test(x))];
    rows.push(['report.order.requester', order.requester?.display], ['report.order.procedure', procedure], ['report.order.accession', accession], ['report.order.reason', reasons.filter(Boolean).join('; ')], ['report.order.when', order.occurrenceDateTime?.slice(0, 16).replace('T', ' ')]);
  } else {
    rows.push(['report.order.accession', text(study, TAG.AccessionNumber)], ['report.order.date', formatDicomDate(text(study, TAG.StudyDate))]);
  }
  const title = document.createElement('div');
  title.className = 'report-subtitle';
  title.textContent = order ? t('report.order.title') : t('report.order.none');
  box.append(title);
  for (const [label, value] of rows) {
    if (!value) continue;
    const row = document.createElement('div');
    row.className = 'report-order-row';
    row.dataset.field = label.split('.').pop();
    const name = document.createElement('span');
    name.textContent = `${t(label)}: `;
    const val = document.createElement('b');
    val.textContent = value;
    row.append(name, val);
    box.append(row);
  }
}

/**
 * @param {HTMLElement} list
 * @param {{sop: string, series?: string, label?: string}[]} keyImages
 * @param {(key: object) => string} thumbnailUrl
 * @param {((sop: string) => void) | null} onDetach null: read-only
 */
export function renderKeyImages(list, keyImages, thumbnailUrl, onDetach) {
  list.replaceChildren();
  for (const key of keyImages) {
    const item = document.createElement('li');
    item.dataset.sop = key.sop;
    item.dataset.testid = 'report-key-image';
    if (key.series) {
      const img = document.createElement('img');
      img.alt = '';
      img.loading = 'lazy';
      img.src = thumbnailUrl(key);
      item.append(img);
    }
    const label = document.createElement('span');
    label.textContent = key.label ?? key.sop;
    item.append(label);
    if (onDetach) {
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.textContent = '✕';
      remove.title = t('report.detach');
      remove.addEventListener('click', () => onDetach(key.sop));
      item.append(remove);
    }
    list.append(item);
  }
}

/** Every version of the study's report, newest first; `onPick(id)` when one is clicked. */
export function renderVersions(list, reports, viewingId, onPick) {
  list.replaceChildren();
  for (const report of reports) {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.testid = 'report-version';
    button.dataset.reportId = report.id;
    button.setAttribute('aria-pressed', String(viewingId === report.id));
    const amends = amendsOf(report);
    const who = report.resultsInterpreter?.[0]?.display ?? report.performer?.[0]?.display ?? '';
    const when = (report.issued ?? report.meta?.lastUpdated ?? '').slice(0, 16).replace('T', ' ');
    button.textContent = [`#${report.id}`, statusText(report), who, when, amends ? t('report.amends', { id: amends }) : ''].filter(Boolean).join(' · ');
    button.addEventListener('click', () => onPick(report.id));
    item.append(button);
    list.append(item);
  }
}
