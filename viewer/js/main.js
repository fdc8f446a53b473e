// Start-up: language, sign-in, DICOMweb client, the two pages (study list, study viewer), URL
// routing (EMR links, back/forward) and the read-only test hooks on window.minipacsViewer.

import { DicomWebClient, HttpError, defaultBaseUrl, setUnauthorizedHandler } from './dicomweb.js';
import { TAG, text } from './dicomjson.js';
import { applyTranslations, getLang, onLangChange, otherLang, setLang, t } from './i18n.js';
import { listLink, parseViewerLink, resolveLinkedStudies, studyLink } from './links.js';
import { StudyList } from './studylist.js';
import { StudyViewer } from './studyviewer.js';
import { Session } from './session.js';
import { ReportView } from './clinicianreport.js';
import { showStatus } from './status.js';

const client = new DicomWebClient(defaultBaseUrl(window.location));
const listView = document.getElementById('study-list-view');
const viewerView = document.getElementById('study-viewer-view');
const reportSection = document.getElementById('report-view');
// Who sees a linked study's signed report before its images (issue #14): those who do not
// read images. Radiologists, technologists and administrators land in the images.
const REPORT_FIRST_ROLES = new Set(['clinician', 'emr']);

function describeError(error) {
  if (error instanceof HttpError) {
    if (error.status === 403) return t('error.forbidden', { user: session.user?.name ?? '' });
    if (error.status === 401) return t('error.auth', { status: error.status });
    return t('error.http', { status: error.status, url: error.url });
  }
  return t('error.network', { error: error?.message ?? String(error) });
}

function onError(error) {
  console.error(error);
  showStatus(describeError(error), 'error', 10000);
}

let openedFromList = false;
let listKey = null;

function showPage(page) {
  if (page !== 'viewer') for (const viewport of viewer.viewports) viewport.stopCine();
  listView.hidden = page !== 'list';
  viewerView.hidden = page !== 'viewer';
  reportSection.hidden = page !== 'report';
  document.body.dataset.page = page;
}

/**
 * An EMR link to one study, for a clinician: its signed report first (clinicianreport.js).
 * False when the images should open instead (another role, `view=images`, key images
 * only, no signed report yet: then the viewer says so).
 */
async function openReportFirst(studyUid) {
  const params = new URL(window.location.href).searchParams;
  if (!REPORT_FIRST_ROLES.has(session.user?.role) || params.get('view') === 'images' || params.get('keyImagesOnly') === 'true') return false;
  showPage('report');
  try {
    if (await reportView.show(studyUid)) return true;
    showNoReport(true);
  } catch (error) {
    // An account that may not read reports (a share link's session): just the images.
    if (error instanceof HttpError && error.status === 403) console.info('reports not readable here:', error.message);
    else onError(error);
  }
  return false;
}

function showNoReport(visible) {
  const notice = document.getElementById('rv-notice');
  notice.hidden = !visible;
}

/** "Open full study" from the report: the images, one step back to the report. */
function openFullStudy(studyUid) {
  const url = new URL(studyLink(window.location.href, studyUid));
  url.searchParams.set('view', 'images');
  history.pushState({ page: 'viewer' }, '', url.href);
  openStudy(studyUid);
}

async function openLinkedStudy(studyUid) {
  showNoReport(false);
  if (await openReportFirst(studyUid)) return;
  await openStudy(studyUid);
}

async function openStudy(studyUid) {
  showPage('viewer');
  try {
    await viewer.open(studyUid);
    if (new URL(window.location.href).searchParams.get('keyImagesOnly') === 'true') await viewer.keyImages.showOnly();
  } catch (error) {
    onError(error);
  }
}

function openFromList(studyUid) {
  history.pushState({ page: 'viewer' }, '', studyLink(window.location.href, studyUid));
  openedFromList = true;
  openStudy(studyUid);
}

function backToList() {
  if (openedFromList) {
    history.back();
    return;
  }
  history.pushState({ page: 'list' }, '', listLink(window.location.href));
  route();
}

async function route() {
  const link = parseViewerLink(new URL(window.location.href).searchParams);
  const key = window.location.search;
  try {
    if (link.kind === 'study') {
      await openLinkedStudy(link.studyUid);
      return;
    }
    if (link.kind === 'studies') {
      const studies = await resolveLinkedStudies(link, (query) => client.searchStudies(query).then((r) => r.items));
      if (studies.length === 1) {
        await openLinkedStudy(text(studies[0], TAG.StudyInstanceUID));
        return;
      }
      showPage('list');
      listKey = key;
      studyList.showLinked(studies);
      return;
    }
    showPage('list');
    // Back from the viewer: the list is still as the user left it.
    if (listKey === key) return;
    listKey = key;
    if (link.kind === 'patient') await studyList.showPatient(link);
    else await studyList.search(0);
  } catch (error) {
    onError(error);
  }
}

applyTranslations(document);
const session = new Session({
  onLock: () => {
    for (const viewport of viewer.viewports) viewport.stopCine();
  },
});
// A 401 later on (the server locked the session): sign in over the current view, then the
// request is asked again.
setUnauthorizedHandler(() => session.reauthenticate());
const studyList = new StudyList(client, openFromList, onError);
const viewer = new StudyViewer(client, { onBack: backToList, onError, user: () => (session.pending ? null : session.user) });
const reportView = new ReportView(client, reportSection, { onOpenStudy: openFullStudy, onError });

const langButton = document.getElementById('lang-switch');
langButton.addEventListener('click', () => setLang(otherLang()));
onLangChange(() => {
  studyList.relabel();
  viewer.relabel();
  reportView.relabel();
});

window.addEventListener('popstate', () => {
  openedFromList = false;
  route();
});

// Read-only state for automated tests and integrators' smoke checks.
function activeSnapshot() {
  return viewer.active.snapshot();
}
const hooks = {
  get page() {
    return document.body.dataset.page ?? 'list';
  },
  get lang() {
    return getLang();
  },
  /** The signed-in user ({name, role, kind}), null before sign-in. */
  get user() {
    const user = session.user;
    return user && !session.pending ? { name: user.name, role: user.role, kind: user.kind, actions: user.actions ?? null } : null;
  },
  get dicomWebBase() {
    return client.baseUrl;
  },
  get studyInstanceUID() {
    return viewerView.hidden ? null : viewer.studyUid;
  },
  get resultCount() {
    return studyList.studies.length;
  },
  get tool() {
    return viewer.tool;
  },
  get layout() {
    return viewer.layout;
  },
  get activeViewportIndex() {
    return viewer.activeIndex;
  },
  get viewports() {
    return viewer.viewports.map((vp) => vp.snapshot());
  },
  get activeViewport() {
    return activeSnapshot();
  },
  get imageIndex() {
    return activeSnapshot().imageIndex;
  },
  get imageNumber() {
    return activeSnapshot().imageNumber;
  },
  get imageCount() {
    return activeSnapshot().imageCount;
  },
  get windowCenter() {
    return activeSnapshot().windowCenter;
  },
  get windowWidth() {
    return activeSnapshot().windowWidth;
  },
  get loadedFrameCount() {
    return activeSnapshot().loadedFrameCount;
  },
  get totalFrameCount() {
    return activeSnapshot().totalFrameCount;
  },
  get cinePlaying() {
    return activeSnapshot().cinePlaying;
  },
  /** 1-based frame (stack position) shown in the active viewport, e.g. during cine. */
  get cineFrame() {
    return activeSnapshot().imageNumber;
  },
  get cineFramesShown() {
    return activeSnapshot().cineFramesShown;
  },
  /** Prior studies listed, the one open beside the current study, the sync mode. */
  get priors() {
    const priors = viewer.priors;
    return { studies: priors.studies.map((s) => s['0020000D']?.Value?.[0]), open: priors.priorUid, sync: priors.sync.mode };
  },
  /** Key images marked in this study, documents saved, whether only key images show. */
  get keyImages() {
    const k = viewer.keyImages;
    return { marked: [...k.marked], saved: k.saved, only: k.only };
  },
  /** The report panel (report.js): shown, report id/status/version, text, key images. */
  get report() {
    return viewer.report.snapshot();
  },
  /** The clinician's report view: state (idle/loading/shown/none), report id, status, conclusion shown, key images. */
  get reportView() {
    return reportView.snapshot();
  },
  /** The SR/PDF/video shown instead of the viewports, if any. */
  get document() {
    return viewer.documents.snapshot();
  },
  /** The hanging protocol the study opened with (or picked): {name, scope, layout}. */
  get hangingProtocol() {
    return viewer.hanging.snapshot();
  },
  get lastMeasurement() {
    return viewer.lastMeasurement ? { ...viewer.lastMeasurement } : null;
  },
  /** Client (page) coordinates of image pixel position (x = column, y = row). */
  imageToClient(x, y, viewportIndex = viewer.activeIndex) {
    return viewer.viewports[viewportIndex].imageToClient({ x, y });
  },
  clientToImage(x, y, viewportIndex = viewer.activeIndex) {
    return viewer.viewports[viewportIndex].clientToImage(x, y);
  },
};
window.minipacsViewer = Object.freeze(hooks);

// An EMR link opened without a session: sign in first, then the same link opens.
await session.start();
route();
