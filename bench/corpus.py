"""The benchmark's synthetic corpus: reproducible from a seed, built once, cached on disk.

Categories (sizes for the full run; `smoke` shrinks every count to a handful):

* ``ct``: one CT series, 512x512x16-bit, Explicit VR Little Endian (``ct_slices`` slices);
* ``mr``: one MR series, 256x256x16-bit;
* ``cr``: computed radiographs, 2000x2500x16-bit (10 MB each);
* ``us``: ultrasound multi-frame, 640x480 RGB, JPEG Baseline (compressed, PS3.5 §8.2.1:
  lossy colour JPEG is YBR_FULL_422);
* ``small``: 64x64 images, one per patient, for the per-instance cost of ingest.

Patients have Vietnamese names (ISO_IR 192, UTF-8). The same seed gives the same UIDs and
pixels, so two runs store the same bytes.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
)

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
          "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý"]
GIVEN = ["Văn An", "Thị Bình", "Minh Châu", "Đức Dũng", "Thị Hằng", "Quốc Huy",
         "Ngọc Lan", "Thành Long", "Thị Mai", "Hữu Nghĩa", "Thu Phương", "Văn Quý",
         "Thị Thảo", "Anh Tuấn", "Thị Vân", "Xuân Yến"]
CORPUS_VERSION = 1  # bump when what is generated changes, so caches are rebuilt


@dataclass(frozen=True)
class CorpusSize:
    ct_slices: int
    mr_slices: int
    cr_images: int
    us_instances: int
    us_frames: int
    small_images: int

    @staticmethod
    def full() -> CorpusSize:
        return CorpusSize(ct_slices=300, mr_slices=60, cr_images=4, us_instances=4,
                          us_frames=30, small_images=500)

    @staticmethod
    def smoke() -> CorpusSize:
        return CorpusSize(ct_slices=6, mr_slices=3, cr_images=1, us_instances=1,
                          us_frames=3, small_images=8)


@dataclass(frozen=True)
class Corpus:
    """Paths of the Part-10 files by category, and the UIDs the measurements ask for."""

    root: Path
    files: dict[str, list[Path]]
    series: dict[str, dict[str, str]]  # category -> StudyInstanceUID, SeriesInstanceUID, ...

    def size_bytes(self, category: str) -> int:
        return sum(p.stat().st_size for p in self.files[category])


def _uid(rng: np.random.Generator) -> str:
    # 2.25 + a 128-bit integer (PS3.5 §B.2), drawn from the seeded generator.
    return "2.25." + str(int.from_bytes(rng.bytes(16), "big"))


def _patient(ds: Dataset, number: int, rng: np.random.Generator) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    family = FAMILY[number % len(FAMILY)]
    given = GIVEN[int(rng.integers(len(GIVEN)))]
    ds.PatientName = f"{family}^{given}"
    ds.PatientID = f"BN{number:07d}"
    ds.PatientBirthDate = f"19{50 + number % 50:02d}0{1 + number % 9}15"
    ds.PatientSex = "MF"[number % 2]


def _base(sop_class: UID, modality: str, patient: int, study: str, series: str,
          number: int, rng: np.random.Generator) -> Dataset:
    ds = Dataset()
    _patient(ds, patient, rng)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, _uid(rng)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.StudyDate, ds.StudyTime = modality, "20240315", "101010"
    ds.AccessionNumber = f"ACC{patient:07d}"
    ds.StudyDescription = f"{modality} benchmark"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _gray(ds: Dataset, pixels: np.ndarray[Any, Any], bits_stored: int) -> None:
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 1 << (bits_stored - 1), 1 << bits_stored
    ds.PixelData = pixels.astype("<u2").tobytes()


def _phantom(rng: np.random.Generator, rows: int, cols: int, top: int, z: float
             ) -> np.ndarray[Any, Any]:
    """A body-like ellipse with structure that changes along z, plus noise."""
    y, x = np.ogrid[-1:1:complex(rows), -1:1:complex(cols)]
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    organ = ((x - 0.3 * np.sin(z)) / 0.2) ** 2 + (y / 0.25) ** 2 < 1
    image = body * (top * 0.4) + organ * (top * 0.3)
    image = image + rng.normal(0, top * 0.02, (rows, cols))
    return np.clip(image, 0, top - 1)


def _jpeg(frame: np.ndarray[Any, Any]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame, "RGB").save(out, format="JPEG", quality=90, subsampling="4:2:2")
    return out.getvalue()


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _series(rng: np.random.Generator) -> tuple[str, str]:
    return _uid(rng), _uid(rng)


def build(root: Path, size: CorpusSize, seed: int) -> Corpus:
    """Write the corpus under `root` (which must be empty or absent)."""
    rng = np.random.default_rng(seed)
    files: dict[str, list[Path]] = {}
    series: dict[str, dict[str, str]] = {}

    def category(name: str, patient: int, count: int, make: Any) -> None:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        study, serie = _series(rng)
        paths = []
        for i in range(count):
            ds = make(patient if name != "small" else patient + i, study, serie, i + 1)
            if name == "small":  # one study per patient: per-instance ingest cost
                ds.StudyInstanceUID, ds.SeriesInstanceUID = _series(rng)
            paths.append(_write(ds, folder / f"{i:05d}.dcm"))
        files[name] = paths
        series[name] = {"study": study, "series": serie, "patient_id": f"BN{patient:07d}"}

    def ct(patient: int, study: str, serie: str, n: int) -> Dataset:
        ds = _base(CTImageStorage, "CT", patient, study, serie, n, rng)
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.SliceThickness, ds.ImagePositionPatient = 1.0, [0, 0, float(n)]
        _gray(ds, _phantom(rng, 512, 512, 4096, n / 20), 12)
        return ds

    def mr(patient: int, study: str, serie: str, n: int) -> Dataset:
        ds = _base(MRImageStorage, "MR", patient, study, serie, n, rng)
        _gray(ds, _phantom(rng, 256, 256, 4096, n / 10), 12)
        return ds

    def cr(patient: int, study: str, serie: str, n: int) -> Dataset:
        ds = _base(ComputedRadiographyImageStorage, "CR", patient, study, serie, n, rng)
        _gray(ds, _phantom(rng, 2500, 2000, 16384, n), 14)
        return ds

    def us(patient: int, study: str, serie: str, n: int) -> Dataset:
        ds = _base(UltrasoundMultiFrameImageStorage, "US", patient, study, serie, n, rng)
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        frames = []
        for f in range(size.us_frames):
            gray = _phantom(rng, 480, 640, 256, f / 5).astype(np.uint8)
            frames.append(_jpeg(np.stack([gray, gray, gray // 2], axis=-1)))
        ds.Rows, ds.Columns, ds.NumberOfFrames = 480, 640, size.us_frames
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "YBR_FULL_422"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = encapsulate(frames, has_bot=True)
        ds["PixelData"].VR = "OB"
        return ds

    def small(patient: int, study: str, serie: str, n: int) -> Dataset:
        ds = _base(SecondaryCaptureImageStorage, "OT", patient, study, serie, 1, rng)
        _gray(ds, _phantom(rng, 64, 64, 4096, n), 12)
        return ds

    category("ct", 1, size.ct_slices, ct)
    category("mr", 2, size.mr_slices, mr)
    category("cr", 3, size.cr_images, cr)
    category("us", 4, size.us_instances, us)
    category("small", 1000, size.small_images, small)
    return Corpus(root, files, series)


def variant(files: list[Path], folder: Path, run: int) -> list[Path]:
    """Copies of `files` in `folder` with new Study, Series and SOP Instance UIDs (the same
    for the same `run`), so one server can ingest the same images again as new instances."""
    rng = np.random.default_rng(run)
    folder.mkdir(parents=True, exist_ok=True)
    studies: dict[str, str] = {}
    out = []
    for n, path in enumerate(files):
        ds = dcmread(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
            old = str(ds.data_element(keyword).value)
            studies.setdefault(old, _uid(rng))
            setattr(ds, keyword, studies[old])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid(rng)
        out.append(_write(ds, folder / f"{n:05d}.dcm"))
    return out


def cached(cache: Path, size: CorpusSize, seed: int) -> Corpus:
    """The corpus for (`size`, `seed`), built under `cache` the first time only."""
    key = (f"v{CORPUS_VERSION}-seed{seed}-ct{size.ct_slices}-mr{size.mr_slices}-"
           f"cr{size.cr_images}-us{size.us_instances}x{size.us_frames}-s{size.small_images}")
    root = cache / key
    manifest = root / "manifest.json"
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        return Corpus(root, {k: [root / p for p in v] for k, v in saved["files"].items()},
                      saved["series"])
    building = cache / f"{key}.building-{os.getpid()}"
    corpus = build(building, size, seed)
    (building / "manifest.json").write_text(json.dumps({
        "files": {k: [str(p.relative_to(building)) for p in v]
                  for k, v in corpus.files.items()},
        "series": corpus.series,
    }))
    building.rename(root)  # atomic: a half-built corpus is never mistaken for one
    return cached(cache, size, seed)
