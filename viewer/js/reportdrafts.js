// The report panel's drafts kept in the browser (report.js): every keystroke is written to
// localStorage at once, per user and study, so a closed tab, a crash or a lost network
// loses nothing; the copy goes once the server has it.

import { EDITABLE, findingsOf, keyImagesOf } from './reportfhir.js';

export function localKey(user, studyUid) {
  return `minipacs.report.${user}.${studyUid}`;
}

export function readLocal(key) {
  try {
    return JSON.parse(localStorage.getItem(key) ?? 'null');
  } catch {
    return null;
  }
}

export function writeLocal(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // A full or disabled storage: the server autosave still keeps the draft.
  }
}

/**
 * Whether the browser's copy (`local`, as report.js keeps it) is the newest text of the
 * study's report (`server`, a DiagnosticReport or null): edited and never saved, newer
 * than the server's last update, of the same report, which is still being written (or
 * being amended). `landed`: the server already has exactly that text (a save sent as the
 * page closed arrived, its answer never kept), so the copy can go.
 */
export function localIsNewest(local, server) {
  if (!local) return { restore: false, landed: false };
  const landed = !!server && local.findings === findingsOf(server) && local.conclusion === (server.conclusion ?? '') && (local.keyImages ?? []).join(' ') === keyImagesOf(server).join(' ');
  const editable = !server || EDITABLE.includes(server.status) || local.mode === 'amend';
  const sameReport = !server || local.reportId === server.id || local.reportId == null;
  const newer = !server || local.at > Date.parse(server.meta?.lastUpdated ?? 0);
  return { restore: !!local.dirty && editable && sameReport && newer && !landed, landed };
}
