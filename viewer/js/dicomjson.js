// Reading attributes from the DICOM JSON model (PS3.18 §F.2): an object keyed by
// 8-hex-digit tags, each { vr, Value: [...] } or { vr, BulkDataURI } or { vr, InlineBinary }.

/** Tags the viewer reads, by DICOM keyword. */
export const TAG = Object.freeze({
  TransferSyntaxUID: '00020010',
  SOPClassUID: '00080016',
  SOPInstanceUID: '00080018',
  StudyDate: '00080020',
  SeriesDate: '00080021',
  AcquisitionDate: '00080022',
  StudyTime: '00080030',
  AccessionNumber: '00080050',
  Modality: '00080060',
  ModalitiesInStudy: '00080061',
  InstitutionName: '00080080',
  ReferringPhysicianName: '00080090',
  StudyDescription: '00081030',
  SeriesDescription: '0008103E',
  PatientName: '00100010',
  PatientID: '00100020',
  IssuerOfPatientID: '00100021',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  OtherPatientIDsSequence: '00101002',
  PatientAge: '00101010',
  SliceThickness: '00180050',
  FrameTime: '00181063',
  CineRate: '00180040',
  RecommendedDisplayFrameRate: '00082144',
  ImagerPixelSpacing: '00181164',
  EstimatedRadiographicMagnificationFactor: '00181114',
  SequenceOfUltrasoundRegions: '00186011',
  RegionLocationMinX0: '00186018',
  RegionLocationMinY0: '0018601A',
  RegionLocationMaxX1: '0018601C',
  RegionLocationMaxY1: '0018601E',
  PhysicalUnitsXDirection: '00186024',
  PhysicalUnitsYDirection: '00186026',
  PhysicalDeltaX: '0018602C',
  PhysicalDeltaY: '0018602E',
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  ImagePositionPatient: '00200032',
  ImageOrientationPatient: '00200037',
  FrameOfReferenceUID: '00200052',
  SliceLocation: '00201041',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  SamplesPerPixel: '00280002',
  PhotometricInterpretation: '00280004',
  PlanarConfiguration: '00280006',
  NumberOfFrames: '00280008',
  Rows: '00280010',
  Columns: '00280011',
  PixelSpacing: '00280030',
  PixelAspectRatio: '00280034',
  BitsAllocated: '00280100',
  BitsStored: '00280101',
  HighBit: '00280102',
  PixelRepresentation: '00280103',
  WindowCenter: '00281050',
  WindowWidth: '00281051',
  RescaleIntercept: '00281052',
  RescaleSlope: '00281053',
  RescaleType: '00281054',
  VOILUTFunction: '00281056',
  PixelData: '7FE00010',
});

function attribute(dataset, tag) {
  return dataset ? dataset[tag] ?? dataset[tag.toUpperCase()] ?? dataset[tag.toLowerCase()] : undefined;
}

/** All values of an attribute (empty array when absent or empty). */
export function values(dataset, tag) {
  const attr = attribute(dataset, tag);
  return attr && Array.isArray(attr.Value) ? attr.Value : [];
}

/** The first value, or `fallback` when absent. */
export function first(dataset, tag, fallback = undefined) {
  const list = values(dataset, tag);
  return list.length ? list[0] : fallback;
}

/** The first value as a number (DS and IS may arrive as strings), or `fallback`. */
export function number(dataset, tag, fallback = undefined) {
  const value = first(dataset, tag);
  if (value === undefined || value === null || value === '') return fallback;
  const n = typeof value === 'number' ? value : Number.parseFloat(value);
  return Number.isFinite(n) ? n : fallback;
}

/** Series datasets in SeriesNumber order (no number last), as a new array. */
export function sortSeries(series) {
  return [...series].sort((a, b) => number(a, TAG.SeriesNumber, 1e9) - number(b, TAG.SeriesNumber, 1e9));
}

/** All values as numbers; non-numeric entries are dropped. */
export function numbers(dataset, tag) {
  return values(dataset, tag)
    .map((v) => (typeof v === 'number' ? v : Number.parseFloat(v)))
    .filter(Number.isFinite);
}

export function text(dataset, tag, fallback = '') {
  const value = first(dataset, tag);
  if (value === undefined || value === null) return fallback;
  if (typeof value === 'object') return personName(value);
  return String(value);
}

export function vr(dataset, tag) {
  return attribute(dataset, tag)?.vr ?? '';
}

/**
 * A PN value object ({Alphabetic, Ideographic, Phonetic}) as display text.
 * Components are Family^Given^Middle^Prefix^Suffix (PS3.5 §6.2); Vietnamese
 * names read family name first, so the components are joined with spaces in order.
 */
export function personName(pn) {
  if (!pn) return '';
  const raw = typeof pn === 'string' ? pn : pn.Alphabetic ?? pn.Ideographic ?? pn.Phonetic ?? '';
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = raw.split('^');
  return [prefix, family, given, middle, suffix]
    .map((part) => part.trim())
    .filter(Boolean)
    .join(' ');
}

export function patientName(dataset) {
  return personName(first(dataset, TAG.PatientName));
}
