// Loaded before everything else and run as soon as it arrives (an async module with few
// imports): when the page is an EMR link to a study, the study's first DICOMweb requests
// go out while the rest of the viewer's modules are still loading. main.js's client takes
// the answers (DicomWebClient.warm). It only starts requests; it shows nothing. A request
// answered 401 (no session yet) is asked again by main.js after the sign-in.

import { DicomWebClient, defaultBaseUrl, sessionHint } from './dicomweb.js';
import { parseViewerLink, resolveLinkedStudies } from './links.js';
import { TAG, text } from './dicomjson.js';

async function warmLink(client, link) {
  if (link.kind === 'study') {
    await client.warmStudy(link.studyUid);
  } else if (link.kind === 'studies') {
    const studies = await resolveLinkedStudies(link, (query) => client.warm(client.studiesUrl(query)).then((r) => r.items));
    if (studies.length === 1) await client.warmStudy(text(studies[0], TAG.StudyInstanceUID));
  }
}

// Signed out when last seen: these requests would only answer 401. main.js asks after
// the sign-in.
const client = new DicomWebClient(defaultBaseUrl(window.location));
if (sessionHint() !== 'out') warmLink(client, parseViewerLink(new URL(window.location.href).searchParams)).catch(() => {
  // main.js asks again and reports the failure in its own words.
});
