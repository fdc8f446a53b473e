// Structured reports (SR, PS3.3 §C.17.3) as readable text, rendered in the page from the
// instance's DICOM JSON metadata (PS3.18 §F.2): the content tree's CONTAINERs become
// headings, TEXT/CODE/NUM/DATE/TIME/DATETIME/PNAME/UIDREF items become "concept: value"
// lines (numbers with their units), IMAGE/COMPOSITE items name the instance they reference.
// Only textContent is set: nothing in the document is ever parsed as HTML.

import { TAG, personName, text, values } from './dicomjson.js';
import { formatDicomDate, formatDicomTime, t } from './i18n.js';

const SR = Object.freeze({
  ValueType: '0040A040',
  RelationshipType: '0040A010',
  ConceptNameCodeSequence: '0040A043',
  ConceptCodeSequence: '0040A168',
  ContentSequence: '0040A730',
  TextValue: '0040A160',
  DateTime: '0040A120',
  Date: '0040A121',
  Time: '0040A122',
  PersonName: '0040A123',
  UID: '0040A124',
  MeasuredValueSequence: '0040A300',
  NumericValue: '0040A30A',
  MeasurementUnitsCodeSequence: '004008EA',
  CodeValue: '00080100',
  CodingSchemeDesignator: '00080102',
  CodeMeaning: '00080104',
  ReferencedSOPSequence: '00081199',
  ReferencedSOPClassUID: '00081150',
  ReferencedSOPInstanceUID: '00081155',
  CompletionFlag: '0040A491',
  VerificationFlag: '0040A493',
  VerifyingObserverSequence: '0040A073',
  VerifyingObserverName: '0040A075',
  VerificationDateTime: '0040A030',
  ContentDate: '00080023',
  ContentTime: '00080033',
});

// Nesting deeper than this is shown flat: a hostile document cannot blow the stack.
const MAX_DEPTH = 32;

/** "Meaning" of a code sequence item, or "(value, scheme)" when it has no meaning. */
export function codeText(item) {
  if (!item) return '';
  const meaning = text(item, SR.CodeMeaning);
  if (meaning) return meaning;
  const value = text(item, SR.CodeValue);
  return value ? `(${value}, ${text(item, SR.CodingSchemeDesignator)})` : '';
}

function conceptName(item) {
  return codeText(values(item, SR.ConceptNameCodeSequence)[0]);
}

/** UCUM units as a reader writes them: the code value ("mm", "cm2"), '1' for no unit. */
function unitText(measured) {
  const unit = values(measured, SR.MeasurementUnitsCodeSequence)[0];
  if (!unit) return '';
  const value = text(unit, SR.CodeValue);
  if (value === '1') return '';
  return text(unit, SR.CodingSchemeDesignator) === 'UCUM' && value ? value : codeText(unit);
}

function dateTimeText(dt) {
  const m = /^(\d{8})(\d{2,6})?/.exec(dt ?? '');
  return m ? [formatDicomDate(m[1]), formatDicomTime(m[2] ?? '')].filter(Boolean).join(' ') : String(dt ?? '');
}

/** The value of a content item as text (empty for CONTAINER). */
export function itemValue(item) {
  switch (text(item, SR.ValueType)) {
    case 'TEXT':
      return text(item, SR.TextValue);
    case 'CODE':
      return codeText(values(item, SR.ConceptCodeSequence)[0]);
    case 'NUM': {
      const measured = values(item, SR.MeasuredValueSequence)[0];
      if (!measured) return t('sr.noValue');
      return [text(measured, SR.NumericValue), unitText(measured)].filter(Boolean).join(' ');
    }
    case 'DATE':
      return formatDicomDate(text(item, SR.Date));
    case 'TIME':
      return formatDicomTime(text(item, SR.Time));
    case 'DATETIME':
      return dateTimeText(text(item, SR.DateTime));
    case 'PNAME':
      return personName(values(item, SR.PersonName)[0]);
    case 'UIDREF':
      return text(item, SR.UID);
    case 'IMAGE':
    case 'COMPOSITE':
    case 'WAVEFORM': {
      const ref = values(item, SR.ReferencedSOPSequence)[0];
      return t('sr.reference', { uid: text(ref, SR.ReferencedSOPInstanceUID) });
    }
    default:
      return text(item, SR.TextValue);
  }
}

function line(className, label, value) {
  const row = document.createElement('p');
  row.className = className;
  if (label) {
    const name = document.createElement('span');
    name.className = 'sr-concept';
    name.textContent = value ? `${label}: ` : label;
    row.append(name);
  }
  if (value) {
    const body = document.createElement('span');
    body.className = 'sr-value';
    body.textContent = value;
    row.append(body);
  }
  return row;
}

function renderItems(items, parent, depth, onReference) {
  for (const item of items) {
    const type = text(item, SR.ValueType);
    const name = conceptName(item);
    if (type === 'CONTAINER') {
      const section = document.createElement('section');
      section.className = 'sr-container';
      const heading = document.createElement(depth < 2 ? 'h3' : 'h4');
      heading.textContent = name;
      section.append(heading);
      parent.append(section);
      renderItems(values(item, SR.ContentSequence), depth < MAX_DEPTH ? section : parent, depth + 1, onReference);
      continue;
    }
    const row = line(`sr-item sr-${type.toLowerCase()}`, name, itemValue(item));
    row.dataset.valueType = type;
    const ref = values(item, SR.ReferencedSOPSequence)[0];
    if (ref && onReference) {
      const open = document.createElement('button');
      open.type = 'button';
      open.className = 'sr-open-image';
      open.textContent = t('sr.openImage');
      open.addEventListener('click', () => onReference(text(ref, SR.ReferencedSOPInstanceUID)));
      row.append(' ', open);
    }
    parent.append(row);
    const children = values(item, SR.ContentSequence);
    if (children.length) {
      const nested = document.createElement('div');
      nested.className = 'sr-nested';
      row.after(nested);
      renderItems(children, depth < MAX_DEPTH ? nested : parent, depth + 1, onReference);
    }
  }
}

/**
 * One SR instance as a DOM tree: title (the root's concept name), status (completion,
 * verification, who verified and when), then the content tree.
 * @param {object} dataset the instance's DICOM JSON metadata
 * @param {(sopInstanceUid: string) => void} [onReference] an IMAGE item's "open" button
 */
export function renderStructuredReport(dataset, onReference) {
  const root = document.createElement('article');
  root.className = 'sr-document';
  root.dataset.testid = 'sr-document';
  const title = document.createElement('h2');
  title.textContent = conceptName(dataset) || t('sr.untitled');
  root.append(title);
  const observer = values(dataset, SR.VerifyingObserverSequence)[0];
  const status = [
    text(dataset, SR.CompletionFlag) && t('sr.completion', { flag: text(dataset, SR.CompletionFlag) }),
    text(dataset, SR.VerificationFlag) && t('sr.verification', { flag: text(dataset, SR.VerificationFlag) }),
    observer && t('sr.verifiedBy', { name: text(observer, SR.VerifyingObserverName), time: dateTimeText(text(observer, SR.VerificationDateTime)) }),
    text(dataset, SR.ContentDate) && `${formatDicomDate(text(dataset, SR.ContentDate))} ${formatDicomTime(text(dataset, SR.ContentTime))}`.trim(),
  ].filter(Boolean);
  root.append(line('sr-status', '', status.join(' · ')));
  const body = document.createElement('div');
  body.className = 'sr-body';
  renderItems(values(dataset, SR.ContentSequence), body, 1, onReference);
  root.append(body);
  root.dataset.sopInstanceUid = text(dataset, TAG.SOPInstanceUID);
  return root;
}
