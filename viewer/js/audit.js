// The auditor's page: search the audit trail (GET /admin/audit) and export it as CSV.
// It uses the viewer's session (sign in at ./ first); the server decides who may read the
// trail (role auditor or admin), and records each search in the trail itself.

import { applyTranslations, getLang, otherLang, setLang, t } from './i18n.js';

const form = document.getElementById('audit-form');
const rows = document.getElementById('audit-rows');
const message = document.getElementById('audit-message');
const csv = document.getElementById('audit-csv');

function criteria() {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(form)) {
    if (!String(value).trim()) continue;
    // datetime-local has no zone: the times the auditor types are local to the browser.
    params.set(name, name === 'since' || name === 'until' ? new Date(value).toISOString() : String(value).trim());
  }
  return params;
}

function say(key, params = {}) {
  message.textContent = t(key, params);
  message.hidden = false;
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text ?? '';
  return td;
}

let latest = 0; // only the newest search may fill the table (answers can cross)

async function search() {
  const mine = ++latest;
  const params = criteria();
  csv.href = `../admin/audit/export?format=csv&${params}`;
  params.set('limit', '500');
  let response;
  let events = [];
  try {
    response = await fetch(`../admin/audit?${params}`, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (response.ok) events = await response.json();
  } catch (error) {
    if (mine === latest) say('login.unreachable', { error: error?.message ?? String(error) });
    return;
  }
  if (mine !== latest) return;
  if (!response.ok) rows.replaceChildren();
  if (response.status === 401) return say('audit.signIn');
  if (response.status === 403) return say('audit.forbidden');
  if (!response.ok) return say('auth.other', { error: (await response.json()).error ?? response.status });
  rows.replaceChildren(...events.map((e) => {
    const tr = document.createElement('tr');
    tr.className = `outcome-${e.outcome}`;
    tr.append(cell(new Date(e.at).toLocaleString(getLang() === 'vi' ? 'vi-VN' : 'en-GB')), cell(e.actor), cell(e.source), cell(e.action),
      cell(e.patient_id), cell(e.study_instance_uid), cell(e.outcome), cell(e.detail));
    return tr;
  }));
  say('audit.count', { n: events.length });
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  search();
});
document.getElementById('lang-switch').addEventListener('click', () => setLang(otherLang()));
applyTranslations(document);
document.title = t('audit.title');
search();
