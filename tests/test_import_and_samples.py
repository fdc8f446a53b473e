"""`minipacs import` of folders and CDs, and the reproducible sample studies."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from pydicom.fileset import FileSet

from conftest import SAMPLE_DIR
from factories import make_dataset, make_instance
from preloaded import LAUNCHER


def _minipacs(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return LAUNCHER.run([*args, "--data-dir", str(data_dir), "--quiet"], dict(os.environ),
                        timeout=300)


def test_import_reports_stored_duplicates_and_rejected_per_file(tmp_path: Path) -> None:
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    (source / "a.dcm").write_bytes(make_instance())
    (source / "sub" / "b").write_bytes(make_instance(modality="MR"))
    (source / "copy.dcm").write_bytes((source / "a.dcm").read_bytes())
    (source / "notes.txt").write_text("not an image")
    (source / "broken.dcm").write_bytes(make_instance(StudyInstanceUID=None))
    result = _minipacs("import", str(source), data_dir=tmp_path / "data")
    assert result.returncode == 1  # some files were rejected
    assert "2 stored, 1 duplicates, 0 replaced, 1 rejected, 1 skipped (of 5 files) into " \
        f"the archive in {tmp_path / 'data'}" in result.stdout
    assert "broken.dcm: StudyInstanceUID" in result.stdout
    assert "notes.txt: not a DICOM file" in result.stdout


def test_import_of_a_dicomdir_cd(tmp_path: Path) -> None:
    fileset = FileSet()
    for modality in ("CT", "CT", "MR"):
        fileset.add(make_dataset(modality=modality, patient_id="CD-1"))
    cd = tmp_path / "cdrom"
    fileset.write(cd)
    assert (cd / "DICOMDIR").exists()
    result = _minipacs("import", str(cd), data_dir=tmp_path / "data")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 stored" in result.stdout and "DICOMDIR" in result.stdout


def test_import_of_a_missing_path_says_so(tmp_path: Path) -> None:
    result = _minipacs("import", str(tmp_path / "nope"), data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "No such file or folder" in result.stderr


def test_sample_dicom_is_reproducible_from_its_script(tmp_path: Path) -> None:
    out = tmp_path / "samples"
    subprocess.run([sys.executable, str(SAMPLE_DIR / "generate.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    committed = sorted(p.relative_to(SAMPLE_DIR) for p in SAMPLE_DIR.rglob("*.dcm"))
    generated = sorted(p.relative_to(out) for p in out.rglob("*.dcm"))
    assert committed == generated and len(committed) > 50
    # The JPEG snapshot depends on the libjpeg bundled with Pillow; every other file is
    # pinned to pydicom's own encoders and must match byte for byte.
    differing = [str(p) for p in committed
                 if not filecmp.cmp(SAMPLE_DIR / p, out / p, shallow=False)]
    assert all("jpeg" in p.lower() or "snapshot" in p.lower() for p in differing), differing
