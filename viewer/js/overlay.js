// Text of the four viewport corners, the way radiologists expect it: patient top left,
// study top right, series and image bottom left, display settings bottom right.

import { TAG, number, patientName, text } from './dicomjson.js';
import { formatAge, formatDicomDate, formatDicomTime, formatNumber, formatSex, t } from './i18n.js';

function line(textValue, testid) {
  return { text: textValue, testid };
}

function round(value) {
  return Number.isFinite(value) ? String(Math.round(value)) : '–';
}

/**
 * @param {object} meta metadata of the instance shown
 * @param {{index:number, total:number, frameNumber:number, numberOfFrames:number,
 *   center:number, width:number, scale:number, calibration:string, pixelValue?:string,
 *   renderedFallback:boolean}} state
 * @returns {{topLeft: {text:string,testid?:string}[], topRight: object[], bottomLeft: object[], bottomRight: object[]}}
 */
/** The overlay's note on how lengths are calibrated (stack.pixelSpacing kinds). */
const CALIBRATION_NOTE = Object.freeze({
  magnified: 'overlay.magnified',
  imager: 'overlay.uncalibrated',
  region: 'overlay.region',
  none: 'overlay.noSpacing',
});

export function overlayLines(meta, state) {
  const birth = [formatDicomDate(text(meta, TAG.PatientBirthDate)), formatSex(text(meta, TAG.PatientSex)), formatAge(text(meta, TAG.PatientAge))]
    .filter(Boolean)
    .join(' · ');
  const topLeft = [line(patientName(meta), 'overlay-patient-name'), line(text(meta, TAG.PatientID), 'overlay-patient-id'), line(birth)];

  const studyDate = [formatDicomDate(text(meta, TAG.StudyDate)), formatDicomTime(text(meta, TAG.StudyTime))].filter(Boolean).join(' ');
  const topRight = [
    line(text(meta, TAG.InstitutionName)),
    line(studyDate, 'overlay-study-date'),
    line(text(meta, TAG.StudyDescription)),
    line(text(meta, TAG.AccessionNumber)),
  ];

  const seriesNumber = text(meta, TAG.SeriesNumber);
  const seriesLine = [seriesNumber ? t('overlay.series', { n: seriesNumber }) : '', text(meta, TAG.Modality)].filter(Boolean).join(' · ');
  const location = number(meta, TAG.SliceLocation);
  const thickness = number(meta, TAG.SliceThickness);
  const sliceLine = [
    location !== undefined ? t('overlay.slice', { loc: formatNumber(location, 1) }) : '',
    thickness !== undefined ? t('overlay.thickness', { t: formatNumber(thickness, 1) }) : '',
  ]
    .filter(Boolean)
    .join('  ');
  const frameSuffix = state.numberOfFrames > 1 ? ` (${state.frameNumber}/${state.numberOfFrames})` : '';
  const bottomLeft = [
    line(seriesLine),
    line(text(meta, TAG.SeriesDescription)),
    line(`${t('overlay.im', { n: state.index + 1, total: state.total })}${frameSuffix}`, 'image-number'),
    line(sliceLine),
  ];

  const bottomRight = [
    line(state.pixelValue ? t('overlay.value', { v: state.pixelValue }) : '', 'pixel-value'),
    line(state.renderedFallback ? t('viewer.renderedFallback') : t('overlay.wl', { w: round(state.width), c: round(state.center) }), 'overlay-wl'),
    line(t('overlay.zoom', { z: formatNumber(state.scale, 2) }), 'overlay-zoom'),
    line(CALIBRATION_NOTE[state.calibration] ? t(CALIBRATION_NOTE[state.calibration]) : '', 'overlay-calibration'),
  ];
  return { topLeft, topRight, bottomLeft, bottomRight };
}
