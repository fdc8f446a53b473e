// Priors (issue #14, "Reading"): the patient's other studies, found by QIDO-RS on the
// current study's PatientID (the server's PatientID matching also takes the patient's other
// identifiers, such as the CCCD), one opened beside the current study, and the two
// viewports scrolled together:
// - by position, when both series share a FrameOfReferenceUID (PS3.3 §C.7.4.1.1.1): the
//   prior shows the slice nearest the current one along the slice normal (stack.slicePosition);
// - after "lock here", otherwise: the offset between the two images shown at that moment
//   (in position when both have geometry, else in image count) is kept.

import { TAG, sortSeries, text } from './dicomjson.js';
import { formatDicomDate, t } from './i18n.js';
import { slicePosition } from './stack.js';

/** The stack index whose slice position is nearest `position`, or undefined without geometry. */
function nearestIndex(stack, position) {
  let best;
  let bestDistance = Infinity;
  stack.forEach((entry, index) => {
    const p = slicePosition(entry.meta);
    if (p === undefined) return;
    const distance = Math.abs(p - position);
    if (distance < bestDistance) {
      bestDistance = distance;
      best = index;
    }
  });
  return best;
}

export class Priors {
  /**
   * @param {import('./studyviewer.js').StudyViewer} viewer
   * @param {HTMLElement} list where the prior studies are listed
   * @param {HTMLButtonElement} lockButton "lock here"
   */
  constructor(viewer, list, lockButton) {
    this.viewer = viewer;
    this.list = list;
    this.lockButton = lockButton;
    this.studies = [];
    this.priorUid = null;
    // mode: 'off' | 'position' (same frame of reference) | 'locked' (offset kept)
    this.sync = { mode: 'off', positionDelta: 0, indexDelta: 0 };
    this.syncing = false;
    this.lockButton.addEventListener('click', () => this.lockHere());
    this.render();
  }

  /** Forget the priors of the study closed. */
  clear() {
    this.studies = [];
    this.priorUid = null;
    this.sync = { mode: 'off', positionDelta: 0, indexDelta: 0 };
    this.render();
  }

  /** List the patient's other studies (newest first). */
  async load(study, isCurrent) {
    const patientId = text(study ?? {}, TAG.PatientID);
    const currentUid = text(study ?? {}, TAG.StudyInstanceUID);
    if (!patientId) return;
    const { items } = await this.viewer.client.searchStudies({ PatientID: patientId });
    if (!isCurrent()) return;
    this.studies = items
      .filter((s) => text(s, TAG.StudyInstanceUID) !== currentUid)
      .sort((a, b) => (text(b, TAG.StudyDate) + text(b, TAG.StudyTime)).localeCompare(text(a, TAG.StudyDate) + text(a, TAG.StudyTime)));
    this.render();
  }

  render() {
    this.list.replaceChildren();
    for (const s of this.studies) {
      const uid = text(s, TAG.StudyInstanceUID);
      const row = document.createElement('button');
      row.type = 'button';
      row.className = 'prior-item';
      row.dataset.testid = 'prior-row';
      row.dataset.studyUid = uid;
      row.setAttribute('aria-pressed', String(uid === this.priorUid));
      row.textContent = [formatDicomDate(text(s, TAG.StudyDate)), text(s, TAG.ModalitiesInStudy), text(s, TAG.StudyDescription)].filter(Boolean).join(' · ');
      row.addEventListener('click', () => this.open(uid));
      this.list.append(row);
    }
    if (!this.studies.length) {
      const empty = document.createElement('div');
      empty.className = 'prior-empty';
      empty.textContent = t('priors.none');
      this.list.append(empty);
    }
    this.lockButton.disabled = this.priorUid === null;
    this.lockButton.setAttribute('aria-pressed', String(this.sync.mode === 'locked'));
    this.lockButton.dataset.syncMode = this.sync.mode;
  }

  /** Open the prior's largest series in the right-hand viewport of a 1×2 layout. */
  async open(studyUid) {
    const viewer = this.viewer;
    const series = sortSeries(await viewer.client.searchSeries(studyUid));
    if (!series.length) return;
    const count = (s) => Number(text(s, TAG.NumberOfSeriesRelatedInstances) || 0);
    const chosen = series.reduce((best, s) => (count(s) > count(best) ? s : best), series[0]);
    viewer.setLayout('1x2', false);
    this.priorUid = studyUid;
    await viewer.loadSeriesInto(1, text(chosen, TAG.SeriesInstanceUID), studyUid);
    this.shown(studyUid);
  }

  /** The prior is in the right-hand viewport (opened here, or by a hanging protocol). */
  shown(studyUid) {
    const viewer = this.viewer;
    this.priorUid = studyUid;
    const current = viewer.viewports[0].entry?.meta;
    const prior = viewer.viewports[1].entry?.meta;
    const frame = (meta) => (meta ? text(meta, TAG.FrameOfReferenceUID) : '');
    const same = frame(current) !== '' && frame(current) === frame(prior);
    this.sync = { mode: same ? 'position' : 'off', positionDelta: 0, indexDelta: 0 };
    this.render();
    if (same) this.follow(viewer.viewports[0]);
  }

  /** "Lock here": keep the offset between the two images shown now. */
  lockHere() {
    const [a, b] = this.viewer.viewports;
    if (!a.entry || !b.entry) return;
    const pa = slicePosition(a.entry.meta);
    const pb = slicePosition(b.entry.meta);
    this.sync = {
      mode: 'locked',
      positionDelta: pa !== undefined && pb !== undefined ? pb - pa : undefined,
      indexDelta: b.imageIndex - a.imageIndex,
    };
    this.render();
  }

  /** A viewport changed image: move the other of the pair to match. */
  follow(viewport) {
    if (this.sync.mode === 'off' || this.syncing || viewport.index > 1 || this.priorUid === null) return;
    const [a, b] = this.viewer.viewports;
    const other = viewport === a ? b : a;
    if (!viewport.entry || !other.stack.length) return;
    const sign = viewport === a ? 1 : -1;
    const delta = this.sync.mode === 'position' ? 0 : this.sync.positionDelta;
    let target;
    const position = slicePosition(viewport.entry.meta);
    if (delta !== undefined && position !== undefined) target = nearestIndex(other.stack, position + sign * delta);
    if (target === undefined) target = viewport.imageIndex + sign * this.sync.indexDelta;
    this.syncing = true;
    try {
      other.setIndex(target);
    } finally {
      this.syncing = false;
    }
  }
}
