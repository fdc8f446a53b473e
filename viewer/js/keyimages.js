// Key images (issue #14): the radiologist marks the image shown with one click or K; the
// study's marked images are saved as a Key Object Selection document in the study (the
// server builds it: POST {dicomweb}/studies/{uid}/key-images). "Key images only"
// (?keyImagesOnly=true, the IID link) shows just the images the newest such document
// of the study references (its CurrentRequestedProcedureEvidenceSequence, PS3.3 §C.17.6.2).

import { TAG, text, values } from './dicomjson.js';
import { SeriesFrames } from './frames.js';
import { buildStack } from './stack.js';
import { showStatus } from './status.js';
import { t } from './i18n.js';

const KOS = '1.2.840.10008.5.1.4.1.1.88.59';
const EVIDENCE = '0040A375';
const REFERENCED_SERIES = '00081115';
const REFERENCED_SOP = '00081199';
const REFERENCED_SOP_INSTANCE = '00081155';

export class KeyImages {
  constructor(viewer, button) {
    this.viewer = viewer;
    this.button = button;
    this.marked = new Set();
    this.saved = 0;
    this.only = false;
    button.addEventListener('click', () => this.toggle());
  }

  clear() {
    this.marked = new Set();
    this.saved = 0;
    this.only = false;
    this.render();
  }

  render() {
    const sop = this.viewer.active?.entry?.sopInstanceUid;
    this.button.setAttribute('aria-pressed', String(!!sop && this.marked.has(sop)));
  }

  /** Mark (or unmark) the active viewport's image and save the study's selection. */
  async toggle() {
    const viewer = this.viewer;
    const sop = viewer.active?.entry?.sopInstanceUid;
    if (!sop || !viewer.studyUid) return;
    if (this.marked.has(sop)) this.marked.delete(sop);
    else this.marked.add(sop);
    this.render();
    // A document needs at least one image: unmarking the last one saves nothing.
    if (!this.marked.size) return;
    const response = await fetch(`${viewer.client.baseUrl}/studies/${encodeURIComponent(viewer.studyUid)}/key-images`, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ instances: [...this.marked] }),
    });
    if (!response.ok) {
      showStatus(t('keyImages.failed', { error: `${response.status} ${await response.text()}` }), 'error', 10000);
      return;
    }
    this.saved++;
    showStatus(t('keyImages.saved', { n: this.marked.size }));
  }

  /** Show only the images the study's newest Key Object Selection references. */
  async showOnly() {
    const viewer = this.viewer;
    const studyUid = viewer.studyUid;
    const documents = [];
    for (const s of viewer.seriesInfo.filter((x) => text(x, TAG.Modality) === 'KO')) {
      const metadata = await viewer.client.seriesMetadata(studyUid, text(s, TAG.SeriesInstanceUID));
      documents.push(...metadata.filter((m) => text(m, TAG.SOPClassUID) === KOS));
    }
    const stamp = (m) => text(m, '00080023') + text(m, '00080033');
    documents.sort((a, b) => stamp(b).localeCompare(stamp(a)));
    if (!documents.length) {
      showStatus(t('keyImages.none'), 'error', 10000);
      return;
    }
    const wanted = new Map();
    for (const evidence of values(documents[0], EVIDENCE)) {
      for (const series of values(evidence, REFERENCED_SERIES)) {
        const sops = new Set(values(series, REFERENCED_SOP).map((r) => text(r, REFERENCED_SOP_INSTANCE)));
        wanted.set(text(series, TAG.SeriesInstanceUID), sops);
      }
    }
    const entries = [...wanted].slice(0, 4);
    viewer.setLayout(entries.length === 1 ? '1x1' : entries.length === 2 ? '1x2' : '2x2', false);
    this.only = true;
    await Promise.all(entries.map(async ([seriesUid, sops], index) => {
      const metadata = (await viewer.client.seriesMetadata(studyUid, seriesUid)).filter((m) => sops.has(text(m, TAG.SOPInstanceUID)));
      const stack = buildStack(metadata);
      viewer.viewports[index].setSeries({ seriesUid, metadata, stack, frames: new SeriesFrames(viewer.client, viewer.scheduler, studyUid, seriesUid, stack) }, 0);
    }));
  }
}
