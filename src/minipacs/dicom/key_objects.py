"""Key Object Selection documents (PS3.3 §A.35.4): the images a radiologist marked as key,
as a DICOM object stored in their study (issue #14, "Key images").

Built with pydicom from the referenced instances' own attributes: the patient and study
modules are copied from the first of them, so the document files under the same patient
and study. Template TID 2010 "Key Object Selection" (PS3.16), document title
(113000, DCM, "Of Interest"), each image one CONTAINS/IMAGE content item.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from minipacs.errors import InvalidAttribute

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
OF_INTEREST = ("113000", "DCM", "Of Interest")

# Copied from the first referenced instance: Patient and General Study modules (type 2
# attributes present even when empty, PS3.3 §C.7.1.1, §C.7.2.1).
COPIED = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
           "OtherPatientIDsSequence", "StudyInstanceUID", "StudyDate", "StudyTime",
           "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription")
_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
           "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def key_object_selection(images: Sequence[Dataset], *, series_uid: str, author: str,
                         now: datetime) -> bytes:
    """Part-10 bytes of a KOS referencing `images` (datasets with SOPClassUID,
    SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID), all of one study.

    Raises `InvalidAttribute` for no image or images of several studies."""
    if not images:
        raise InvalidAttribute("a key object selection needs at least one image; got none")
    studies = {str(i.StudyInstanceUID) for i in images}
    if len(studies) != 1:
        raise InvalidAttribute(
            f"key images must be of one study; got StudyInstanceUIDs {sorted(studies)}")
    first = images[0]
    ds = Dataset()
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 192")
    for keyword in COPIED:
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)  # type: ignore[union-attr]
        elif keyword in _TYPE_2:
            setattr(ds, keyword, "")
    # Key Object Document Series (PS3.3 §C.17.6.1)
    ds.Modality = "KO"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 9901
    ds.SeriesDescription = "Key images"
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.Manufacturer = "minipacs"
    # Key Object Document (PS3.3 §C.17.6.2)
    ds.SOPClassUID = KEY_OBJECT_SELECTION
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = int(now.timestamp())
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S.%f")
    ds.InstanceCreationDate = ds.ContentDate
    ds.InstanceCreationTime = ds.ContentTime
    by_series: dict[str, list[Dataset]] = {}
    for image in images:
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
        by_series.setdefault(str(image.SeriesInstanceUID), []).append(ref)
    evidence = Dataset()
    evidence.StudyInstanceUID = first.StudyInstanceUID
    evidence.ReferencedSeriesSequence = []
    for uid, refs in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = uid
        series.ReferencedSOPSequence = refs
        evidence.ReferencedSeriesSequence.append(series)
    ds.CurrentRequestedProcedureEvidenceSequence = [evidence]
    # SR Document Content (PS3.3 §C.17.3), TID 2010: title, observer, the images.
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code(*OF_INTEREST)]
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = [template]
    observer = Dataset()
    observer.RelationshipType = "HAS OBS CONTEXT"
    observer.ValueType = "PNAME"
    observer.ConceptNameCodeSequence = [_code("121008", "DCM", "Person Observer Name")]
    observer.PersonName = author
    content = [observer]
    for image in images:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
        item.ReferencedSOPSequence = [ref]
        content.append(item)
    ds.ContentSequence = content
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
