"""Build real DICOM instances for tests: Part-10 bytes or parsed datasets.

``make_instance(modality="CT", frames=3, transfer_syntax=RLELossless)`` returns the bytes
a modality would send: 128-byte preamble, ``DICM``, file meta group and the data set
encoded in the requested transfer syntax. Pixel data is a small deterministic gradient,
so two calls with the same arguments differ only in the generated UIDs.

Transfer syntaxes ``make_instance`` encodes itself (checked against pydicom 3.0.2 with
pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg and pylibjpeg-rle installed):

* Implicit VR Little Endian, Explicit VR Little Endian, Deflated Explicit VR Little
  Endian, Explicit VR Big Endian (pixel words are byte-swapped here; pydicom writes
  the bytes of OW as given).
* RLE Lossless (pydicom's own encoder).
* JPEG 2000 Lossless and JPEG 2000 (lossy, compression ratio 10) via pylibjpeg-openjpeg.
* JPEG Baseline 8-bit via Pillow: pixels become 8-bit; RGB is stored as YBR_FULL_422
  (PS3.5 §8.2.1: colour lossy JPEG is YCbCr with 4:2:2 subsampling).
* JPEG Lossless SV1 (process 14, predictor 1) via the small encoder in this module,
  which uses one fixed-length Huffman table. Decodable by pylibjpeg-libjpeg and dcmtk.

Any other encapsulated syntax (JPEG-LS, JPEG Extended, HTJ2K, ...) needs the test to
supply already encoded frames through ``encapsulated_frames=[...]``; the factory then
only encapsulates them (PS3.5 §A.4) with a basic offset table.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    JPEG2000,
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

__all__ = [
    "ENCODABLE_TRANSFER_SYNTAXES",
    "SOP_CLASS_BY_MODALITY",
    "make_dataset",
    "make_instance",
    "to_part10",
]

SOP_CLASS_BY_MODALITY: dict[str, UID] = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "US": UltrasoundMultiFrameImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "OT": SecondaryCaptureImageStorage,
}

_NATIVE_SYNTAXES = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
_PYDICOM_ENCODED_SYNTAXES = (RLELossless, JPEG2000Lossless, JPEG2000)
ENCODABLE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    *_NATIVE_SYNTAXES,
    *_PYDICOM_ENCODED_SYNTAXES,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
)
"""Transfer syntaxes ``make_instance`` can produce without ``encapsulated_frames``."""


def make_instance(
    *,
    modality: str = "CT",
    patient_name: str = "Nguyễn^Văn An",
    patient_id: str = "BN0001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    sop_class: str | None = None,
    frames: int = 1,
    rows: int = 64,
    columns: int = 64,
    transfer_syntax: str = ExplicitVRLittleEndian,
    study_date: str = "20240315",
    accession_number: str = "ACC0001",
    encapsulated_frames: Sequence[bytes] | None = None,
    **extra: Any,
) -> bytes:
    """Return a Part-10 instance (preamble, file meta, data set) as bytes.

    ``study_uid``, ``series_uid`` and ``sop_uid`` are generated when not given.
    ``sop_class`` defaults from ``modality`` (see ``SOP_CLASS_BY_MODALITY``); an
    unknown modality without ``sop_class`` raises ``ValueError``.

    Pixels: CT signed 16-bit (Rescale -1024/1), MR unsigned 16-bit, CR/DX unsigned
    12-in-16-bit, OT 8-bit MONOCHROME2, US 8-bit RGB; JPEG Baseline forces 8 bits.

    ``**extra`` are DICOM keywords applied last, after pixel encoding, so they win
    over everything above: ``ReferringPhysicianName="Lê^Minh"``, ``NumberOfFrames=2``.
    A value of ``None`` deletes the attribute (``StudyInstanceUID=None`` builds an
    instance without a Study Instance UID). Group 0002 keywords go to the file meta;
    deleting a required one (``TransferSyntaxUID=None``) writes the meta as it is.

    ``encapsulated_frames`` are already compressed frames for ``transfer_syntax``;
    they replace the gradient and set NumberOfFrames to their count.
    """
    ds = _build_dataset(
        modality=modality,
        patient_name=patient_name,
        patient_id=patient_id,
        study_uid=study_uid or generate_uid(),
        series_uid=series_uid or generate_uid(),
        sop_uid=sop_uid or generate_uid(),
        sop_class=sop_class,
        frames=frames,
        rows=rows,
        columns=columns,
        transfer_syntax=UID(transfer_syntax),
        study_date=study_date,
        accession_number=accession_number,
        encapsulated_frames=encapsulated_frames,
    )
    _apply_overrides(ds, extra)
    return to_part10(ds)


def make_dataset(**overrides: Any) -> Dataset:
    """Return ``make_instance(**overrides)`` parsed back by pydicom.

    The result is what a receiver sees: ``file_meta`` set, compressed pixel data still
    encapsulated, ``pixel_array`` decodable.
    """
    return dcmread(io.BytesIO(make_instance(**overrides)))


def to_part10(ds: Dataset) -> bytes:
    """Encode ``ds`` as Part-10 bytes in ``ds.file_meta.TransferSyntaxUID``.

    Pixel data must already be in that syntax (byte-swapped for big endian,
    encapsulated for compressed syntaxes).
    """
    buffer = io.BytesIO()
    meta = ds.get("file_meta", FileMetaDataset())
    required = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
    if all(keyword in meta for keyword in required):
        dcmwrite(buffer, ds, enforce_file_format=True)
    else:
        # A test asked for a broken file meta; write it as is rather than repair it.
        ds.preamble = b"\x00" * 128
        if "TransferSyntaxUID" in meta:
            dcmwrite(buffer, ds)
        else:
            dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def _build_dataset(
    *,
    modality: str,
    patient_name: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    sop_class: str | None,
    frames: int,
    rows: int,
    columns: int,
    transfer_syntax: UID,
    study_date: str,
    accession_number: str,
    encapsulated_frames: Sequence[bytes] | None,
) -> Dataset:
    sop_class = UID(sop_class) if sop_class is not None else None
    if sop_class is None:
        if modality not in SOP_CLASS_BY_MODALITY:
            raise ValueError(
                f"no default SOP class for modality {modality!r}; pass sop_class=... or "
                f"use one of {sorted(SOP_CLASS_BY_MODALITY)}"
            )
        sop_class = SOP_CLASS_BY_MODALITY[modality]
    if encapsulated_frames is None and transfer_syntax not in ENCODABLE_TRANSFER_SYNTAXES:
        raise ValueError(
            f"make_instance cannot encode {transfer_syntax.name} ({transfer_syntax}); pass "
            f"encapsulated_frames=[...] with frames already in that syntax"
        )

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = transfer_syntax

    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.StudyTime = "101500"
    ds.SeriesTime = "101500"
    ds.AccessionNumber = accession_number
    ds.Modality = modality
    ds.Manufacturer = "minipacs-factories"
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if modality in ("CT", "MR"):
        ds.FrameOfReferenceUID = generate_uid()
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-rows / 2, -columns / 2, 0]
        ds.PixelSpacing = [1, 1]
        ds.SliceThickness = 1

    color = modality == "US"
    eight_bit = color or modality == "OT" or transfer_syntax == JPEGBaseline8Bit
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = "RGB" if color else "MONOCHROME2"
    if color:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if eight_bit else 16
    ds.BitsStored = 12 if modality in ("CR", "DX") and not eight_bit else ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if modality == "CT" and not eight_bit else 0
    if modality == "CT":
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
    frame_count = len(encapsulated_frames) if encapsulated_frames is not None else frames
    if frame_count > 1 or sop_class == UltrasoundMultiFrameImageStorage:
        ds.NumberOfFrames = frame_count
    if sop_class == UltrasoundMultiFrameImageStorage:
        # PS3.3 C.7.6.5: the cine module is required for multi-frame ultrasound.
        ds.FrameTime = 50
        ds.FrameIncrementPointer = tag_for_keyword("FrameTime")

    if encapsulated_frames is not None:
        ds.PixelData = encapsulate(list(encapsulated_frames))
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        return ds

    pixels = _gradient(ds, frames)
    if transfer_syntax in _NATIVE_SYNTAXES:
        big_endian = transfer_syntax == ExplicitVRBigEndian
        ds.PixelData = pixels.astype(
            pixels.dtype.newbyteorder(">" if big_endian else "<")
        ).tobytes()
        ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
    elif transfer_syntax in _PYDICOM_ENCODED_SYNTAXES:
        ds.compress(
            transfer_syntax,
            pixels if frames > 1 else pixels[0],
            generate_instance_uid=False,
            j2k_cr=[10] if transfer_syntax == JPEG2000 else None,
        )
    elif transfer_syntax == JPEGBaseline8Bit:
        encoded = [_encode_jpeg_baseline(frame) for frame in pixels]
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        if color:
            ds.PhotometricInterpretation = "YBR_FULL_422"
    else:  # JPEGLosslessSV1
        precision = int(ds.BitsStored)
        encoded = [_encode_jpeg_lossless_sv1(frame, precision) for frame in pixels]
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    return ds


def _apply_overrides(ds: Dataset, overrides: dict[str, Any]) -> None:
    for keyword, value in overrides.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(
                f"{keyword!r} is not a DICOM keyword; pass keywords such as "
                f"ReferringPhysicianName=... as **extra"
            )
        target = ds.file_meta if tag >> 16 == 0x0002 else ds
        if value is None:
            if keyword in target:
                del target[keyword]
        elif dictionary_VR(tag) == "SQ" and isinstance(value, list):
            setattr(target, keyword, [_as_item(item) for item in value])
        else:
            setattr(target, keyword, value)


def _as_item(item: Dataset | dict[str, Any]) -> Dataset:
    """Sequence items may be given as ``{"PatientID": "...", ...}`` dicts of keywords."""
    if isinstance(item, Dataset):
        return item
    dataset = Dataset()
    _apply_overrides(dataset, item)
    return dataset


def _gradient(ds: Dataset, frames: int) -> NDArray[Any]:
    """Deterministic frames shaped (frames, rows, columns[, 3]) in the dataset's pixel type.

    Smooth ramps without wrap-around, so lossy syntaxes stay close to the original;
    frame f is shifted by f * 30 % of the value range / frames, so frames differ (up to
    about 75 frames for 8-bit pixels) and frame order is testable.
    """
    rows, columns = int(ds.Rows), int(ds.Columns)
    r = np.arange(rows, dtype=np.float64)[None, :, None] / rows
    c = np.arange(columns, dtype=np.float64)[None, None, :] / columns
    f = np.arange(frames, dtype=np.float64)[:, None, None] / frames
    dtype: type[np.integer[Any]]
    if int(ds.BitsAllocated) == 8:
        low, span, dtype = 0, 255, np.uint8
    elif int(ds.PixelRepresentation) == 1:
        low, span, dtype = -1000, 3000, np.int16  # Hounsfield-like, exercises the sign bit
    else:
        low, span, dtype = 0, (1 << int(ds.BitsStored)) - 1, np.uint16
    ramps = [0.4 * r + 0.3 * c + 0.3 * f]
    if int(ds.SamplesPerPixel) == 3:
        ramps += [0.7 * (1 - r) + 0.3 * f + 0 * c, 0.7 * c + 0.3 * f + 0 * r]
    planes = [np.floor(low + span * ramp).astype(dtype) for ramp in ramps]
    return np.stack(planes, axis=-1) if len(planes) == 3 else planes[0]


def _encode_jpeg_baseline(frame: NDArray[Any]) -> bytes:
    """JPEG baseline (ISO 10918-1 process 1) of one 8-bit frame, encoded by Pillow."""
    buffer = io.BytesIO()
    image = Image.fromarray(frame)  # uint8 (rows, columns) is "L", (..., 3) is "RGB"
    image.save(buffer, format="JPEG", quality=95, subsampling="4:2:2")
    return buffer.getvalue()


def _encode_jpeg_lossless_sv1(frame: NDArray[Any], precision: int) -> bytes:
    """Encode one frame as ISO 10918-1 lossless, first-order prediction (selection value 1).

    ``frame`` is (rows, columns) or (rows, columns, samples); signed pixels are encoded
    as their unsigned bit pattern, as PS3.5 §8.2.1 requires. Each difference category
    SSSS 0..16 gets a 5-bit Huffman code (one table, shared by all components), which
    is valid but not optimal: test frames are small.
    """
    samples = frame.reshape(frame.shape[0], frame.shape[1], -1).astype(np.int64)
    samples &= (1 << precision) - 1
    rows, columns, components = samples.shape

    # T.81 H.1.2.1: first sample predicted by 2^(P-1), first row by left, first column
    # by above, everything else by left (Ra) for selection value 1.
    prediction = np.empty_like(samples)
    prediction[0, 0] = 1 << (precision - 1)
    prediction[0, 1:] = samples[0, :-1]
    prediction[1:, 0] = samples[:-1, 0]
    prediction[1:, 1:] = samples[1:, :-1]
    # T.81 H.1.2.2: differences are taken modulo 2^16, read as -32768..32767.
    difference = (samples - prediction) & 0xFFFF
    difference = np.where(difference >= 0x8000, difference - 0x10000, difference)
    magnitude = np.abs(difference)
    category = np.where(magnitude == 0, 0, np.frexp(magnitude.astype(np.float64))[1])
    category = np.where(difference == -32768, 16, category)  # SSSS 16 has no extra bits
    extra_bits = np.where(difference < 0, difference - 1, difference)
    extra_bits &= (1 << np.minimum(category, 15)) - 1
    extra_bits = np.where(category == 16, 0, extra_bits)
    extra_length = np.where(category == 16, 0, category)

    code_and_extra = (category << extra_length) | extra_bits
    code_length = 5 + extra_length
    flat_value = code_and_extra.reshape(-1)  # pixel by pixel, components in order (T.81 A.2.3)
    flat_length = code_length.reshape(-1)
    start = np.cumsum(flat_length) - flat_length
    total = int(flat_length.sum())
    # T.81 F.1.2.3: the last byte is padded with 1-bits, hence ones everywhere first.
    bit_stream = np.ones(total + (-total % 8), dtype=np.uint8)
    for position in range(int(flat_length.max(initial=0))):
        inside = position < flat_length
        shift = flat_length[inside] - 1 - position
        bit_stream[start[inside] + position] = (flat_value[inside] >> shift) & 1
    entropy = np.packbits(bit_stream).tobytes()
    entropy = entropy.replace(b"\xff", b"\xff\x00")  # T.81 B.1.1.5 byte stuffing

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload

    component_ids = range(1, components + 1)
    frame_header = bytes((precision,)) + rows.to_bytes(2, "big") + columns.to_bytes(2, "big")
    frame_header += bytes((components,)) + b"".join(bytes((i, 0x11, 0)) for i in component_ids)
    code_counts = bytes(16)[:4] + bytes((17,)) + bytes(11)  # 17 codes of length 5
    huffman = bytes((0x00,)) + code_counts + bytes(range(17))
    scan_header = bytes((components,)) + b"".join(bytes((i, 0x00)) for i in component_ids)
    scan_header += bytes((1, 0, 0))  # Ss = predictor 1, Se = 0, Ah/Al = 0 (no point transform)
    return (
        b"\xff\xd8"
        + segment(0xC3, frame_header)
        + segment(0xC4, huffman)
        + segment(0xDA, scan_header)
        + entropy
        + b"\xff\xd9"
    )
