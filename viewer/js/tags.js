// Rows for the DICOM tag browser: tag, name, VR and value of each attribute in an
// instance's DICOM JSON metadata, sequences expanded. Names come from a short list of the
// attributes people look for; others show the tag alone (the JSON model carries no names).

import { personName } from './dicomjson.js';

const NAMES = {
  '00020010': 'TransferSyntaxUID',
  '00080005': 'SpecificCharacterSet',
  '00080008': 'ImageType',
  '00080012': 'InstanceCreationDate',
  '00080013': 'InstanceCreationTime',
  '00080016': 'SOPClassUID',
  '00080018': 'SOPInstanceUID',
  '00080020': 'StudyDate',
  '00080021': 'SeriesDate',
  '00080022': 'AcquisitionDate',
  '00080023': 'ContentDate',
  '00080030': 'StudyTime',
  '00080031': 'SeriesTime',
  '00080032': 'AcquisitionTime',
  '00080033': 'ContentTime',
  '00080050': 'AccessionNumber',
  '00080060': 'Modality',
  '00080061': 'ModalitiesInStudy',
  '00080064': 'ConversionType',
  '00080070': 'Manufacturer',
  '00080080': 'InstitutionName',
  '00080090': 'ReferringPhysicianName',
  '00080201': 'TimezoneOffsetFromUTC',
  '00081010': 'StationName',
  '00081030': 'StudyDescription',
  '0008103E': 'SeriesDescription',
  '00081040': 'InstitutionalDepartmentName',
  '00081050': 'PerformingPhysicianName',
  '00081090': 'ManufacturerModelName',
  '00082144': 'RecommendedDisplayFrameRate',
  '00100010': 'PatientName',
  '00100020': 'PatientID',
  '00100021': 'IssuerOfPatientID',
  '00100030': 'PatientBirthDate',
  '00100040': 'PatientSex',
  '00101000': 'OtherPatientIDs',
  '00101002': 'OtherPatientIDsSequence',
  '00101010': 'PatientAge',
  '00101020': 'PatientSize',
  '00101030': 'PatientWeight',
  '00180015': 'BodyPartExamined',
  '00180040': 'CineRate',
  '00180050': 'SliceThickness',
  '00180060': 'KVP',
  '00180088': 'SpacingBetweenSlices',
  '00181020': 'SoftwareVersions',
  '00181030': 'ProtocolName',
  '00181063': 'FrameTime',
  '00181150': 'ExposureTime',
  '00181151': 'XRayTubeCurrent',
  '00181152': 'Exposure',
  '00181164': 'ImagerPixelSpacing',
  '00181210': 'ConvolutionKernel',
  '00185100': 'PatientPosition',
  '00186011': 'SequenceOfUltrasoundRegions',
  '0020000D': 'StudyInstanceUID',
  '0020000E': 'SeriesInstanceUID',
  '00200010': 'StudyID',
  '00200011': 'SeriesNumber',
  '00200012': 'AcquisitionNumber',
  '00200013': 'InstanceNumber',
  '00200020': 'PatientOrientation',
  '00200032': 'ImagePositionPatient',
  '00200037': 'ImageOrientationPatient',
  '00200052': 'FrameOfReferenceUID',
  '00201040': 'PositionReferenceIndicator',
  '00201041': 'SliceLocation',
  '00201206': 'NumberOfStudyRelatedSeries',
  '00201208': 'NumberOfStudyRelatedInstances',
  '00201209': 'NumberOfSeriesRelatedInstances',
  '00280002': 'SamplesPerPixel',
  '00280004': 'PhotometricInterpretation',
  '00280006': 'PlanarConfiguration',
  '00280008': 'NumberOfFrames',
  '00280009': 'FrameIncrementPointer',
  '00280010': 'Rows',
  '00280011': 'Columns',
  '00280030': 'PixelSpacing',
  '00280034': 'PixelAspectRatio',
  '00280100': 'BitsAllocated',
  '00280101': 'BitsStored',
  '00280102': 'HighBit',
  '00280103': 'PixelRepresentation',
  '00280106': 'SmallestImagePixelValue',
  '00280107': 'LargestImagePixelValue',
  '00280301': 'BurnedInAnnotation',
  '00281050': 'WindowCenter',
  '00281051': 'WindowWidth',
  '00281052': 'RescaleIntercept',
  '00281053': 'RescaleSlope',
  '00281054': 'RescaleType',
  '00281055': 'WindowCenterWidthExplanation',
  '00281056': 'VOILUTFunction',
  '00282110': 'LossyImageCompression',
  '00283010': 'VOILUTSequence',
  '00321060': 'RequestedProcedureDescription',
  '00400244': 'PerformedProcedureStepStartDate',
  '00400254': 'PerformedProcedureStepDescription',
  '00400275': 'RequestAttributesSequence',
  '00401001': 'RequestedProcedureID',
  '7FE00010': 'PixelData',
};

/** "0020000D" → "(0020,000D)" */
export function formatTag(tag) {
  const t = tag.toUpperCase();
  return `(${t.slice(0, 4)},${t.slice(4, 8)})`;
}

export function tagName(tag) {
  const t = tag.toUpperCase();
  if (NAMES[t]) return NAMES[t];
  // Odd group numbers are private (PS3.5 §7.8).
  if (Number.parseInt(t.slice(0, 4), 16) % 2 === 1) return t.slice(4, 6) === '00' ? 'PrivateCreator' : 'Private';
  return '';
}

function valueText(attribute, bulkLabel) {
  if (attribute.BulkDataURI) return `${bulkLabel} ${attribute.BulkDataURI}`;
  if (attribute.InlineBinary) return `${bulkLabel} ${attribute.InlineBinary.length} base64 chars`;
  if (!Array.isArray(attribute.Value)) return '';
  return attribute.Value.map((v) => (v !== null && typeof v === 'object' ? personName(v) : String(v ?? ''))).join(' \\ ');
}

/**
 * Attributes of `dataset` as table rows, in tag order, sequence items nested by depth.
 * @param {object} dataset DICOM JSON object
 * @param {string} bulkLabel text shown for bulk data values
 * @returns {{tag:string, name:string, vr:string, value:string, depth:number}[]}
 */
export function tagRows(dataset, bulkLabel = '(bulk data)', depth = 0) {
  const rows = [];
  for (const tag of Object.keys(dataset).sort()) {
    const attribute = dataset[tag] ?? {};
    if (attribute.vr === 'SQ') {
      const items = Array.isArray(attribute.Value) ? attribute.Value : [];
      rows.push({ tag: formatTag(tag), name: tagName(tag), vr: 'SQ', value: `${items.length} item(s)`, depth });
      items.forEach((item, i) => {
        rows.push({ tag: '', name: `Item ${i + 1}`, vr: '', value: '', depth: depth + 1 });
        rows.push(...tagRows(item ?? {}, bulkLabel, depth + 2));
      });
    } else {
      rows.push({ tag: formatTag(tag), name: tagName(tag), vr: attribute.vr ?? '', value: valueText(attribute, bulkLabel), depth });
    }
  }
  return rows;
}
