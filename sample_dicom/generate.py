"""Write the synthetic minipacs sample studies as DICOM Part-10 files.

    python sample_dicom/generate.py [--out DIR]

Three Vietnamese patients (names in ISO_IR 192, i.e. UTF-8), four studies: chest CT
(40 slices + one RLE Lossless key image), follow-up chest DX (MONOCHROME1), brain MR
(20 slices) and abdominal ultrasound (RGB cine + one JPEG Baseline snapshot). Files go
to ``DIR/<patient>/<YYYYMMDD-modality>/<NN-series>/<NNN>.dcm``; DIR defaults to the
folder holding this script.

Output is reproducible: UIDs are name-based UUIDs (ISO/IEC 9834-8 ``2.25.`` form, PS3.5
§B.2) derived from fixed names, dates are fixed, noise uses fixed seeds and RLE uses
pydicom's own encoder. Two runs give byte-identical files; the JPEG snapshot is the one
exception across machines, as its bytes depend on the libjpeg bundled with Pillow.
"""

from __future__ import annotations

import argparse
import io
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import phantoms
from PIL import Image
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    RLELossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://minipacs.invalid/sample_dicom/v1")
INSTITUTION = "Bệnh viện Đa khoa Demo"
ISSUER_OF_PATIENT_ID = "BV-DEMO"
CT_SLICES = 40
MR_SLICES = 20
US_FRAMES = 20
US_FRAME_TIME_MS = 50.0


def derived_uid(*names: str) -> UID:
    """``2.25.<uuid5>`` for a path of names: the same names always give the same UID."""
    return UID(f"2.25.{uuid.uuid5(_UID_NAMESPACE, '/'.join(names)).int}")


@dataclass(frozen=True)
class Patient:
    name: str  # PN, family^given, NFC-normalised Vietnamese
    patient_id: str
    birth_date: str
    sex: str
    citizen_id: str  # CCCD: 12 digits, province + sex/century + birth year + serial
    insurance_id: str  # BHYT: 15 characters
    slug: str


@dataclass(frozen=True)
class Study:
    patient: Patient
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    referring_physician: str
    modality: str
    station: str
    body_part: str

    @property
    def uid(self) -> UID:
        return derived_uid("study", self.accession)


@dataclass(frozen=True)
class Series:
    study: Study
    number: int
    description: str
    slug: str

    @property
    def uid(self) -> UID:
        return derived_uid("series", self.study.accession, str(self.number))

    def instance_uid(self, instance_number: int) -> UID:
        return derived_uid("instance", self.study.accession, str(self.number), str(instance_number))

    def folder(self, root: Path) -> Path:
        study_folder = f"{self.study.date}-{self.study.modality.lower()}"
        return root / self.study.patient.slug / study_folder / f"{self.number:02d}-{self.slug}"


AN = Patient(
    name="Nguyễn^Văn An",
    patient_id="BN2024000123",
    birth_date="19680412",
    sex="M",
    citizen_id="079068012345",
    insurance_id="DN4790123456789",
    slug="nguyen-van-an",
)
NGOC = Patient(
    name="Trần^Thị Bích Ngọc",
    patient_id="BN2024000456",
    birth_date="19850923",
    sex="F",
    citizen_id="001185004567",
    insurance_id="GD4010987654321",
    slug="tran-thi-bich-ngoc",
)
BAO = Patient(
    name="Đặng^Quốc Bảo",
    patient_id="BN2025000789",
    birth_date="19921130",
    sex="M",
    citizen_id="048092007890",
    insurance_id="HC4480112233445",
    slug="dang-quoc-bao",
)

CT_STUDY = Study(
    AN, "20240315", "091512", "CT2403150012", "1001",
    "CT ngực có tiêm thuốc cản quang", "Lê^Minh Tuấn", "CT", "CT01", "CHEST",
)  # fmt: skip
DX_STUDY = Study(
    AN, "20250120", "140233", "DX2501200045", "1002",
    "X-quang ngực thẳng (PA) tái khám", "Lê^Minh Tuấn", "DX", "DX01", "CHEST",
)  # fmt: skip
MR_STUDY = Study(
    NGOC, "20240905", "163040", "MR2409050078", "2001",
    "MRI sọ não không tiêm", "Phạm^Thu Hà", "MR", "MR01", "HEAD",
)  # fmt: skip
US_STUDY = Study(
    BAO, "20250214", "104005", "US2502140031", "3001",
    "Siêu âm ổ bụng tổng quát", "Võ^Thanh Hải", "US", "US03", "ABDOMEN",
)  # fmt: skip

CT_AXIAL = Series(CT_STUDY, 1, "Ngực trục ngang 5mm", "nguc-truc-ngang")
CT_KEY_IMAGE = Series(CT_STUDY, 2, "Ảnh chính: nốt phổi phải (RLE)", "anh-chinh-rle")
DX_PA = Series(DX_STUDY, 1, "Ngực PA", "nguc-pa")
MR_T2 = Series(MR_STUDY, 1, "T2 TSE trục ngang", "t2-tse-truc-ngang")
US_CINE = Series(US_STUDY, 1, "Gan mật - cine", "gan-mat-cine")
US_SNAPSHOT = Series(US_STUDY, 2, "Ảnh chụp túi mật (JPEG)", "anh-chup-jpeg")


def base_dataset(
    series: Series, sop_class: UID, instance_number: int, transfer_syntax: UID
) -> Dataset:
    """Patient, study, series, equipment and SOP common attributes of one instance."""
    study, patient = series.study, series.study.patient
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = series.instance_uid(instance_number)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.ImplementationClassUID = derived_uid("implementation")
    ds.file_meta.ImplementationVersionName = "MINIPACS_SAMPLE"

    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate = study.date
    ds.InstanceCreationTime = study.time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = series.instance_uid(instance_number)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study.time
    ds.AccessionNumber = study.accession
    ds.Modality = study.modality
    ds.Manufacturer = "minipacs-synthetic"
    ds.InstitutionName = INSTITUTION
    ds.ReferringPhysicianName = study.referring_physician
    ds.TimezoneOffsetFromUTC = "+0700"
    ds.StationName = study.station
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = f"phantom-{study.modality.lower()}"

    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = ISSUER_OF_PATIENT_ID
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.OtherPatientIDsSequence = [
        _other_patient_id(patient.citizen_id, "CCCD"),
        _other_patient_id(patient.insurance_id, "BHYT"),
    ]
    ds.PatientAge = _age(patient.birth_date, study.date)
    ds.BodyPartExamined = study.body_part
    ds.SoftwareVersions = "generate.py 1"

    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.InstanceNumber = instance_number
    ds.BurnedInAnnotation = "NO"
    return ds


def _other_patient_id(value: str, issuer: str) -> Dataset:
    item = Dataset()
    item.PatientID = value
    item.IssuerOfPatientID = issuer
    item.TypeOfPatientID = "TEXT"
    return item


def _age(birth_date: str, on_date: str) -> str:
    years = int(on_date[:4]) - int(birth_date[:4]) - (on_date[4:] < birth_date[4:])
    return f"{years:03d}Y"


def _set_pixels(ds: Dataset, pixels: np.ndarray, photometric: str, bits_stored: int) -> None:
    """Image Pixel module for native little-endian ``pixels``: ([frames,] rows, columns[, 3])."""
    color = photometric == "RGB"
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric
    if color:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if color else pixels.shape[-2:]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"


def _cross_sectional(ds: Dataset, spacing: float, z: float, thickness: float) -> None:
    """Frame of reference and image plane of an axial slice (PS3.3 C.7.6.2)."""
    size = int(ds.Rows)
    corner = round(-(size - 1) / 2 * spacing, 4)  # pixel centres symmetric about 0
    ds.FrameOfReferenceUID = derived_uid("frame-of-reference", str(ds.AccessionNumber))
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [corner, corner, z]
    ds.SliceLocation = z
    ds.SliceThickness = thickness
    ds.PixelSpacing = [spacing, spacing]


def ct_slice(series: Series, index: int, instance_number: int, image_type: list[str]) -> Dataset:
    """Slice ``index`` (0 = most cranial) of the chest phantom as a CT Image instance."""
    ds = base_dataset(series, CTImageStorage, instance_number, ExplicitVRLittleEndian)
    ds.ImageType = image_type
    _set_pixels(ds, phantoms.ct_slice(index), "MONOCHROME2", bits_stored=12)
    _cross_sectional(ds, phantoms.CT_PIXEL_SPACING_MM, -20 - index * 5.0, 5.0)
    ds.AcquisitionNumber = 1
    ds.KVP = 120
    ds.XRayTubeCurrent = 200
    ds.ConvolutionKernel = "STANDARD"
    ds.ReconstructionDiameter = round(phantoms.CT_ROWS * phantoms.CT_PIXEL_SPACING_MM, 4)
    ds.ContrastBolusAgent = "Iopromide 300 mgI/mL"
    ds.ContrastBolusRoute = "IV"
    ds.PixelPaddingValue = phantoms.CT_PADDING  # VR "US or SS": SS as pixels are signed
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = [40, -600]
    ds.WindowWidth = [400, 1500]
    ds.WindowCenterWidthExplanation = ["MEDIASTINUM", "LUNG"]
    return ds


def ct_series() -> Iterator[Dataset]:
    for index in range(CT_SLICES):
        yield ct_slice(CT_AXIAL, index, index + 1, ["ORIGINAL", "PRIMARY", "AXIAL"])
    # Key image: pixel-identical copy of the lesion slice, RLE Lossless (PS3.5 Annex G).
    lesion = phantoms.CT_LESION_SLICE
    key = ct_slice(CT_KEY_IMAGE, lesion, 1, ["DERIVED", "SECONDARY", "AXIAL"])
    key.DerivationDescription = "Copy of series 1 lesion slice, RLE Lossless"
    key.SourceImageSequence = [_reference(CTImageStorage, CT_AXIAL.instance_uid(lesion + 1))]
    key.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    yield key


def mr_series() -> Iterator[Dataset]:
    for index in range(MR_SLICES):
        ds = base_dataset(MR_T2, MRImageStorage, index + 1, ExplicitVRLittleEndian)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        _set_pixels(ds, phantoms.mr_slice(index, MR_SLICES), "MONOCHROME2", bits_stored=16)
        z = -30 + index * phantoms.MR_SLICE_SPACING_MM  # skull base upwards
        _cross_sectional(ds, phantoms.MR_PIXEL_SPACING_MM, z, 5.0)
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = ["SK", "SP"]
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "*tse2d1_16"
        ds.AngioFlag = "N"
        ds.RepetitionTime = 4000
        ds.EchoTime = 100
        ds.EchoTrainLength = 16
        ds.NumberOfAverages = 2
        ds.ImagingFrequency = 63.87
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = 1.5
        ds.SpacingBetweenSlices = phantoms.MR_SLICE_SPACING_MM
        ds.FlipAngle = 150
        ds.ReceiveCoilName = "HEAD"
        ds.AcquisitionNumber = 1
        ds.WindowCenter = 800
        ds.WindowWidth = 1600
        yield ds


def dx_series() -> Iterator[Dataset]:
    sop_class = DigitalXRayImageStorageForPresentation
    ds = base_dataset(DX_PA, sop_class, 1, ExplicitVRLittleEndian)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    # MONOCHROME1: the lowest value is white, so the viewer must invert (PS3.3 C.7.6.3.1.2).
    _set_pixels(ds, phantoms.dx_chest(), "MONOCHROME1", bits_stored=12)
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1  # lower values: less X-ray intensity
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE"  # PS3.3 C.8.11.3: INVERSE with MONOCHROME1
    ds.LossyImageCompression = "00"
    ds.WindowCenter = 2300
    ds.WindowWidth = 3400
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.ViewPosition = "PA"
    ds.ViewCodeSequence = [_code("399348003", "SCT", "postero-anterior")]
    ds.PositionerType = "COLUMN"  # chest stand
    ds.KVP = 125
    ds.DistanceSourceToDetector = 1800
    ds.DetectorType = "SCINTILLATOR"
    ds.ImagerPixelSpacing = [phantoms.DX_PIXEL_SPACING_MM, phantoms.DX_PIXEL_SPACING_MM]
    ds.AnatomicRegionSequence = [_code("51185008", "SCT", "Chest")]
    ds.AcquisitionContextSequence = []
    yield ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _us_common(ds: Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0011"]  # 0011: 2D + colour flow
    ds.PatientOrientation = ""
    ds.SequenceOfUltrasoundRegions = [_us_region()]


def _us_region() -> Dataset:
    """One 2D tissue region, 0.15 mm per pixel (PS3.3 C.8.5.5.1)."""
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionFlags = 0
    region.RegionLocationMinX0 = 0
    region.RegionLocationMinY0 = 0
    region.RegionLocationMaxX1 = phantoms.US_COLUMNS - 1
    region.RegionLocationMaxY1 = phantoms.US_ROWS - 1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = 0.15
    region.PhysicalDeltaY = 0.15
    return region


def us_series() -> Iterator[Dataset]:
    frames = phantoms.us_frames(US_FRAMES)
    cine = base_dataset(US_CINE, UltrasoundMultiFrameImageStorage, 1, ExplicitVRLittleEndian)
    _us_common(cine)
    _set_pixels(cine, frames, "RGB", bits_stored=8)
    cine.NumberOfFrames = US_FRAMES
    cine.FrameIncrementPointer = tag_for_keyword("FrameTime")  # PS3.3 C.7.6.6
    cine.FrameTime = US_FRAME_TIME_MS
    cine.CineRate = round(1000 / US_FRAME_TIME_MS)
    cine.RecommendedDisplayFrameRate = round(1000 / US_FRAME_TIME_MS)
    cine.PreferredPlaybackSequencing = 0  # looping
    cine.LossyImageCompression = "00"
    yield cine

    # Snapshot of frame 1, JPEG baseline; colour lossy JPEG is YBR_FULL_422 (PS3.5 §8.2.1).
    snapshot = base_dataset(US_SNAPSHOT, UltrasoundImageStorage, 1, JPEGBaseline8Bit)
    _us_common(snapshot)
    snapshot.ImageType = ["DERIVED", "PRIMARY", "ABDOMINAL", "0011"]
    _set_pixels(snapshot, frames[0], "RGB", bits_stored=8)
    buffer = io.BytesIO()
    Image.fromarray(frames[0]).save(buffer, format="JPEG", quality=90, subsampling="4:2:2")
    snapshot.PhotometricInterpretation = "YBR_FULL_422"
    snapshot.PixelData = encapsulate([buffer.getvalue()])
    snapshot["PixelData"].VR = "OB"
    snapshot["PixelData"].is_undefined_length = True
    snapshot.LossyImageCompression = "01"
    snapshot.LossyImageCompressionRatio = f"{frames[0].nbytes / len(buffer.getvalue()):.2f}"
    snapshot.LossyImageCompressionMethod = "ISO_10918_1"
    source = _reference(UltrasoundMultiFrameImageStorage, US_CINE.instance_uid(1))
    source.ReferencedFrameNumber = 1
    snapshot.SourceImageSequence = [source]
    yield snapshot


def _reference(sop_class: UID, sop_instance: UID) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def all_series() -> Iterator[tuple[Series, Dataset]]:
    """Every instance with the series it belongs to, in writing order."""
    series_by_uid = {
        series.uid: series
        for series in (CT_AXIAL, CT_KEY_IMAGE, DX_PA, MR_T2, US_CINE, US_SNAPSHOT)
    }
    for datasets in (ct_series(), dx_series(), mr_series(), us_series()):
        for ds in datasets:
            yield series_by_uid[ds.SeriesInstanceUID], ds


def write_all(root: Path) -> list[Path]:
    for patient in (AN, NGOC, BAO):
        # Queries compare code points: a decomposed (NFD) name would never match NFC input.
        if not unicodedata.is_normalized("NFC", patient.name):
            raise ValueError(f"patient name {patient.name!r} is not NFC; type it precomposed")
    written = []
    for series, ds in all_series():
        path = series.folder(root) / f"{int(ds.InstanceNumber):03d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent, help="output folder"
    )
    args = parser.parse_args(argv)
    written = write_all(args.out)
    size = sum(path.stat().st_size for path in written)
    print(f"wrote {len(written)} files, {size / 1e6:.2f} MB, under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
