// Hanging protocols (issue #14, "Reading"): when a study opens, the best-matching protocol
// lays the viewports out, puts the series it names where it says, and sets each
// viewport's window. The protocols come from the server (GET ../viewer-settings/
// hanging-protocols: the user's own, then the defaults; format in docs/reading.md and
// src/minipacs/viewer_settings/hanging_protocols.py). The user's own protocol wins over a
// default; among the same kind, the most specific one (modality, body part, priors).
// A menu picks another protocol; "Save layout" stores the current one as the user's own.

import { TAG, sortSeries, text } from './dicomjson.js';
import { t } from './i18n.js';
import { CT_PRESETS } from './lut.js';
import { showStatus } from './status.js';

const URL_BASE = '../viewer-settings/hanging-protocols';
const COUNTS = { '1x1': 1, '1x2': 2, '2x2': 4 };
const BODY_PART_EXAMINED = '00180015'; // series level (PS3.3 C.7.3.1)

function regex(source) {
  try {
    return source ? new RegExp(source, 'i') : null;
  } catch {
    return /(?!)/; // an expression this browser cannot read matches nothing
  }
}

function escapeRegex(value) {
  return value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** axial / coronal / sagittal from ImageOrientationPatient (PS3.3 C.7.6.2.1.1): the
 * patient axis nearest the slice normal (row × column direction cosines). */
export function orientationOf(meta) {
  const v = meta?.[TAG.ImageOrientationPatient]?.Value;
  if (!v || v.length !== 6) return '';
  const [r0, r1, r2, c0, c1, c2] = v.map(Number);
  const n = [r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0].map(Math.abs);
  const biggest = Math.max(...n);
  if (!(biggest > 0)) return '';
  return ['sagittal', 'coronal', 'axial'][n.indexOf(biggest)];
}

function modalityRegex(protocol) {
  return regex(protocol.modality && `^(?:${protocol.modality})$`);
}

/** The patient's other studies (newest first) with a modality the protocol hangs. */
export function relevantPriors(protocol, priors) {
  const modality = modalityRegex(protocol);
  return modality ? priors.filter((p) => (p[TAG.ModalitiesInStudy]?.Value ?? []).some((m) => modality.test(m))) : priors;
}

/** Does the study (its QIDO series, its study row, its priors) fit the protocol? */
export function studyMatches(protocol, study, series, priors) {
  const modality = modalityRegex(protocol);
  const modalities = new Set([...series.map((s) => text(s, TAG.Modality)), ...(study?.[TAG.ModalitiesInStudy]?.Value ?? [])].filter(Boolean));
  if (modality && ![...modalities].some((m) => modality.test(m))) return false;
  const bodyPart = regex(protocol.bodyPart);
  if (bodyPart) {
    const words = [...series.map((s) => text(s, BODY_PART_EXAMINED)), text(study ?? {}, TAG.StudyDescription)];
    if (!words.some((w) => w && bodyPart.test(w))) return false;
  }
  // priors null: not known yet (fits if the rest does).
  return priors === null || (protocol.minPriors ?? 0) <= relevantPriors(protocol, priors).length;
}

function specificity(protocol) {
  return (protocol.scope === 'own' ? 100 : 0) + (protocol.minPriors ? 4 : 0) + (protocol.bodyPart ? 2 : 0) + (protocol.modality ? 1 : 0);
}

/** The protocol to open the study with: own first, then the most specific; null if none. */
export function chooseProtocol(protocols, study, series, priors) {
  let best = null;
  for (const protocol of protocols) {
    if (!studyMatches(protocol, study, series, priors)) continue;
    if (!best || specificity(protocol) > specificity(best)) best = protocol;
  }
  return best;
}

export class Hanging {
  /** @param {import('./studyviewer.js').StudyViewer} viewer */
  constructor(viewer) {
    this.viewer = viewer;
    this.protocols = null; // promise of the list
    this.applied = null;
    this.menu = document.getElementById('hanging-protocol');
    this.saveButton = document.getElementById('hanging-save');
    this.dialog = document.getElementById('hanging-save-dialog');
    this.menu.addEventListener('change', () => {
      const chosen = this.list.find((p) => this.key(p) === this.menu.value);
      this.menu.blur();
      if (chosen) this.applyProtocol(chosen, () => true).catch((error) => viewer.hooks.onError(error));
    });
    this.saveButton.addEventListener('click', () => this.askName());
    this.dialog.querySelector('form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.saveMine(this.dialog.querySelector('input').value).catch((error) => viewer.hooks.onError(error));
    });
    this.list = [];
  }

  key(protocol) {
    return `${protocol.scope}:${protocol.name}`;
  }

  /** The protocols for this user, asked once (again after a save). */
  load(force = false) {
    if (!this.protocols || force) {
      this.protocols = fetch(URL_BASE, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then((r) => (r.ok ? r.json() : { protocols: [] }))
        .then((body) => {
          this.list = body.protocols ?? [];
          this.renderMenu();
          return this.list;
        })
        .catch(() => {
          this.protocols = null;
          return [];
        });
    }
    return this.protocols;
  }

  /** Lay the opened study out by its best protocol, else one series per viewport. */
  async apply(isCurrent) {
    const viewer = this.viewer;
    const protocols = await this.load();
    if (!isCurrent()) return;
    // Wait for the priors' search only when a protocol that fits the study needs them.
    const needsPriors = (p) => p.minPriors || p.viewports.some((vp) => vp.series.some((r) => r.study === 'prior'));
    const wantsPriors = protocols.some((p) => needsPriors(p) && studyMatches(p, viewer.study, viewer.seriesInfo, null));
    if (wantsPriors) await viewer.priorsLoading;
    if (!isCurrent()) return;
    const protocol = chooseProtocol(protocols, viewer.study, viewer.seriesInfo, viewer.priors.studies);
    if (!protocol) {
      this.applied = null;
      this.renderMenu();
      await viewer.fillEmptyViewports();
      return;
    }
    await this.applyProtocol(protocol, isCurrent);
  }

  async applyProtocol(protocol, isCurrent) {
    const viewer = this.viewer;
    this.applied = protocol;
    this.renderMenu();
    viewer.setLayout(protocol.layout, false);
    const prior = relevantPriors(protocol, viewer.priors.studies)[0];
    const priorUid = prior ? text(prior, TAG.StudyInstanceUID) : null;
    const priorSeries = priorUid && protocol.viewports.some((vp) => vp.series.some((r) => r.study === 'prior')) ? sortSeries(await viewer.client.searchSeries(priorUid)) : [];
    if (!isCurrent()) return;
    const used = new Set();
    const placed = [];
    for (const [index, viewport] of protocol.viewports.entries()) {
      const found = await this.findSeries(viewport.series, used, priorUid, priorSeries);
      if (!isCurrent()) return;
      if (!found) continue;
      used.add(found.uid);
      placed.push(
        viewer.loadSeriesInto(index, found.uid, found.studyUid).then(() => this.setWindow(viewer.viewports[index], viewport.window)),
      );
    }
    await Promise.all(placed);
    if (!isCurrent()) return;
    // A prior beside the current study (priors.js): listed as open, scrolled in sync.
    const right = viewer.viewports[1].series?.seriesUid;
    if (priorUid && right && priorSeries.some((s) => text(s, TAG.SeriesInstanceUID) === right)) viewer.priors.shown(priorUid);
    // Viewports the protocol left empty get the next series, as without a protocol.
    await viewer.fillEmptyViewports();
    viewer.activate(0);
  }

  /** The first alternative that finds a series: an unused one, else one already shown. */
  async findSeries(alternatives, used, priorUid, priorSeries) {
    for (const rule of alternatives) {
      const onPrior = rule.study === 'prior';
      if (onPrior && !priorUid) continue;
      const studyUid = onPrior ? priorUid : this.viewer.studyUid;
      const candidates = (onPrior ? priorSeries : this.viewer.seriesInfo).filter((s) => this.fits(s, rule));
      // The largest first: a volume before a scout or a key-image series.
      const size = (s) => Number(text(s, TAG.NumberOfSeriesRelatedInstances) || 0);
      candidates.sort((a, b) => size(b) - size(a));
      const matching = [];
      for (const s of candidates) if (await this.fitsGeometry(s, rule, studyUid)) matching.push(text(s, TAG.SeriesInstanceUID));
      const uid = matching.find((u) => !used.has(u)) ?? matching[0];
      if (uid) return { uid, studyUid };
    }
    return null;
  }

  fits(series, rule) {
    const modality = text(series, TAG.Modality);
    // Documents (SR, KO, PR, PDF) are not hung unless a rule asks for their modality.
    if (!rule.modality && ['SR', 'KO', 'PR', 'DOC'].includes(modality)) return false;
    const checks = [
      [rule.modality && `^(?:${rule.modality})$`, modality],
      [rule.description, text(series, TAG.SeriesDescription)],
      [rule.bodyPart, text(series, BODY_PART_EXAMINED)],
    ];
    if (checks.some(([source, value]) => source && !regex(source).test(value))) return false;
    const count = Number(text(series, TAG.NumberOfSeriesRelatedInstances) || 0);
    return !rule.minImages || count >= rule.minImages;
  }

  /** Orientation needs the series' metadata (fetched once, shown later anyway). */
  async fitsGeometry(series, rule, studyUid) {
    if (!rule.orientation) return true;
    try {
      const { metadata } = await this.viewer.getSeries(text(series, TAG.SeriesInstanceUID), studyUid);
      return orientationOf(metadata[0]) === rule.orientation;
    } catch {
      return false;
    }
  }

  setWindow(viewport, window) {
    if (!viewport.series || !window || window === 'default') return;
    if (typeof window === 'object') {
      viewport.setWindow(window.center, window.width);
      return;
    }
    const preset = CT_PRESETS.find((p) => p.id === window);
    if (preset) viewport.setWindow(preset.center, preset.width);
  }

  /** One series in two viewports (CT chest: lung and mediastinum windows): scrolling one
   * scrolls the other to the same image. */
  follow(viewport) {
    if (this.following || !viewport.series) return;
    const viewer = this.viewer;
    this.following = true;
    try {
      for (const other of viewer.viewports.slice(0, COUNTS[viewer.layout])) {
        if (other !== viewport && other.series?.seriesUid === viewport.series.seriesUid) other.setIndex(viewport.imageIndex);
      }
    } finally {
      this.following = false;
    }
  }

  // ---- the menu and "save layout as mine" -------------------------------------------------

  renderMenu() {
    const menu = this.menu;
    menu.replaceChildren();
    const head = new Option(this.applied ? t('hanging.applied', { name: this.applied.name }) : t('hanging.menu'), '');
    head.disabled = true;
    head.selected = true;
    menu.append(head);
    for (const scope of ['own', 'default']) {
      const group = document.createElement('optgroup');
      group.label = t(scope === 'own' ? 'hanging.mine' : 'hanging.defaults');
      for (const protocol of this.list.filter((p) => p.scope === scope)) group.append(new Option(protocol.name, this.key(protocol)));
      if (group.children.length) menu.append(group);
    }
    menu.dataset.applied = this.applied ? this.key(this.applied) : '';
  }

  relabel() {
    this.renderMenu();
  }

  /** The current layout as a protocol: which series where (by description), the windows. */
  currentProtocol(name) {
    const viewer = this.viewer;
    const current = new Set(viewer.seriesInfo.map((s) => text(s, TAG.SeriesInstanceUID)));
    const count = COUNTS[viewer.layout];
    const viewports = [];
    let showsPrior = false;
    for (const vp of viewer.viewports.slice(0, count)) {
      if (!vp.series) {
        viewports.push({ window: 'default', series: [{}] });
        continue;
      }
      const meta = vp.stack[0]?.meta ?? {};
      const study = current.has(vp.series.seriesUid) ? 'current' : 'prior';
      showsPrior ||= study === 'prior';
      const rule = { study, modality: escapeRegex(text(meta, TAG.Modality)) };
      const description = text(meta, TAG.SeriesDescription);
      if (description) rule.description = `^${escapeRegex(description)}$`;
      const orientation = orientationOf(meta);
      if (orientation) rule.orientation = orientation;
      viewports.push({ window: this.windowOf(vp), series: [rule, { study }] });
    }
    const first = viewer.seriesInfo.find((s) => !['SR', 'KO', 'PR'].includes(text(s, TAG.Modality))) ?? viewer.seriesInfo[0] ?? {};
    const bodyPart = text(first, BODY_PART_EXAMINED);
    const protocol = {
      name,
      modality: escapeRegex(text(first, TAG.Modality)),
      bodyPart: bodyPart ? escapeRegex(bodyPart) : (this.applied?.bodyPart ?? ''),
      layout: viewer.layout,
      viewports,
    };
    if (showsPrior) protocol.minPriors = 1;
    return protocol;
  }

  windowOf(vp) {
    if (vp.windowSource !== 'user') return 'default';
    const preset = CT_PRESETS.find((p) => p.center === vp.view.center && p.width === vp.view.width);
    return preset ? preset.id : { center: vp.view.center, width: vp.view.width };
  }

  suggestedName() {
    const first = this.viewer.seriesInfo[0] ?? {};
    return [text(first, TAG.Modality), text(first, BODY_PART_EXAMINED) || this.applied?.name?.replace(/^\S+\s*/, '') || ''].filter(Boolean).join(' ').toUpperCase().slice(0, 64);
  }

  askName() {
    if (!this.viewer.studyUid) return;
    const input = this.dialog.querySelector('input');
    input.value = this.applied?.scope === 'own' ? this.applied.name : this.suggestedName();
    this.dialog.showModal();
    input.select();
  }

  async saveMine(rawName) {
    const name = rawName.trim();
    if (!name) return;
    const protocol = this.currentProtocol(name);
    const response = await fetch(`${URL_BASE}/mine/${encodeURIComponent(name)}`, {
      method: 'PUT',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(protocol),
    });
    if (!response.ok) {
      showStatus(t('hanging.failed', { error: `${response.status} ${await response.text()}` }), 'error', 10000);
      return;
    }
    this.dialog.close();
    const saved = await response.json();
    await this.load(true);
    this.applied = this.list.find((p) => this.key(p) === this.key(saved)) ?? saved;
    this.renderMenu();
    showStatus(t('hanging.saved', { name }));
  }

  /** For tests and integrators (main.js): the protocol applied, its name and scope. */
  snapshot() {
    return this.applied ? { name: this.applied.name, scope: this.applied.scope, layout: this.applied.layout } : null;
  }
}
