"""One export's de-identification of data sets (PS3.15 E.1.1), in place, with pydicom.

An export has one secret key: every UID maps through a keyed hash, so the same
original UID becomes the same new UID in every file of the export (a series stays a
series, a reference still points at the exported instance) and a different one in the
next export. Each patient gets one pseudonym and one date shift per export. The key
never leaves the process; the mapping the archive keeps is written by `export`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID

from minipacs.deidentify.profile import ProfileOptions, action_for
from minipacs.dicom.names import strip_diacritics

# Modalities whose pixels routinely carry burned-in patient text, and Secondary Capture
# (PS3.3 A.8: screenshots, scanned documents). None of the profile's attribute actions
# touches pixels, and minipacs does not offer the Clean Pixel Data Option.
BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT"})
_SECONDARY_CAPTURE_ROOT = "1.2.840.10008.5.1.4.1.1.7"

DATE_SHIFT_RANGE = (-365, -1)  # days; the whole range is in the past

_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC"})
_STRING_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UT", "UC"})
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY: dict[str, str] = {
    "DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000D",
    "IS": "0", "DS": "0", "UR": "",
}
# In descriptors: dates (20240315, 15/03/2024) and long digit runs (phone numbers,
# citizen ID numbers) are identifying whatever attribute they hide in.
_DATE_OR_NUMBER = re.compile(
    r"\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b|\b\d{4}[/.-]\d{1,2}[/.-]\d{1,2}\b|\d{6,}")
# Attributes whose values name or identify the patient, staff or place; cleaned out of
# descriptors by value (Clean Descriptors Option, PS3.15 E.3.5).
_NAME_KEYWORDS = (
    "PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
    "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician",
)
_VALUE_KEYWORDS = (
    "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "PatientAddress",
    "PatientTelephoneNumbers", "PatientBirthDate", "MedicalRecordLocator",
)


@dataclass(frozen=True)
class PatientPseudonym:
    patient_id: str
    issuer_of_patient_id: str
    pseudonym: str
    date_shift_days: int


def burned_in_reason(ds: Dataset) -> str | None:
    """Why an instance may carry identifying text in its pixels, or None."""
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        return "BurnedInAnnotation (0028,0301) is YES"
    modality = str(ds.get("Modality", "")).upper()
    if modality in BURNED_IN_MODALITIES:
        return f"Modality {modality} often has burned-in annotation"
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == _SECONDARY_CAPTURE_ROOT or sop_class.startswith(_SECONDARY_CAPTURE_ROOT
                                                                    + "."):
        return f"SOP Class {sop_class} is Secondary Capture"
    return None


class Deidentifier:
    """Applies the Basic Profile and `options` to the data sets of one export."""

    def __init__(self, options: ProfileOptions, *, key: bytes | None = None) -> None:
        self.options = options
        self._key = key or secrets.token_bytes(32)
        self._patients: dict[tuple[str, str], PatientPseudonym] = {}

    # -------------------------------------------------------------- mappings
    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}|{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The export's UID for `original`: 2.25 + a UUID (PS3.5 B.2) derived from a keyed
        hash (RFC 9562 version 8), at most 44 characters."""
        raw = bytearray(self._digest("uid", original)[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80
        raw[8] = (raw[8] & 0x3F) | 0x80
        return f"2.25.{int.from_bytes(raw, 'big')}"

    def patient(self, patient_id: str, issuer: str = "") -> PatientPseudonym:
        """One pseudonym and one date shift per patient (PatientID within its issuer)."""
        found = self._patients.get((patient_id, issuer))
        if found is None:
            digest = self._digest("patient", f"{issuer}|{patient_id}").hex().upper()
            low, high = DATE_SHIFT_RANGE
            found = PatientPseudonym(patient_id, issuer, f"DEID{digest[:12]}",
                                     low + secrets.randbelow(high - low + 1))
            self._patients[(patient_id, issuer)] = found
        return found

    def patients(self) -> list[PatientPseudonym]:
        return list(self._patients.values())

    # -------------------------------------------------------------- one data set
    def apply(self, ds: Dataset) -> PatientPseudonym:
        """De-identify `ds` (and its file meta) in place; returns its patient's pseudonym."""
        patient = self.patient(str(ds.get("PatientID", "")),
                               str(ds.get("IssuerOfPatientID", "")))
        identifiers = _identifiers(ds) if self.options.clean_descriptors else []
        shift = patient.date_shift_days if self.options.retain_longitudinal_modified_dates \
            else None
        self._walk(ds, shift, identifiers)
        # PS3.15 E.1.1: Patient Name and ID are Z; a dummy (the pseudonym) is allowed,
        # and keeps one patient's studies together for the researcher.
        ds.PatientID = patient.pseudonym
        ds.PatientName = patient.pseudonym
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self.options.names()
        method_codes = []
        for value, meaning in self.options.method_codes():
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            method_codes.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(method_codes)
        # PS3.3 C.12.1.1.7: say whether dates were shifted or removed.
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if shift is not None \
            else "REMOVED"
        if hasattr(ds, "file_meta"):
            meta = ds.file_meta
            for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                            "ReceivingApplicationEntityTitle", "PrivateInformation",
                            "PrivateInformationCreatorUID"):
                if keyword in meta:
                    delattr(meta, keyword)
            meta.MediaStorageSOPInstanceUID = UID(str(ds.SOPInstanceUID))
        return patient

    def _walk(self, ds: Dataset, shift: int | None, identifiers: list[str]) -> None:
        for tag in list(ds.keys()):
            if tag.element == 0:  # group lengths are recomputed on write
                continue
            elem = ds[tag]
            action = action_for(tag, self.options)
            if action == "X":
                del ds[tag]
            elif action == "Z":
                elem.value = Sequence() if elem.VR == "SQ" else None
            elif action == "D":
                self._dummy(elem)
            elif action == "U" or (action == "S" and elem.VR == "UI"):
                self._remap(elem)
            elif elem.VR == "SQ":  # K, C, S or not listed: keep the sequence, clean its items
                for item in elem.value:
                    self._walk(item, shift, identifiers)
            elif elem.VR in ("DA", "DT") and action in ("C", None):
                # Listed dates are C under the option; dates the table does not list are
                # kept by the profile, so they move too, keeping every interval intact.
                if shift is not None:
                    _shift_dates(elem, shift)
            elif action == "C" and elem.VR in _TEXT_VRS:
                _clean_text(elem, identifiers)
            elif action == "S":
                elem.value = None

    def _dummy(self, elem: DataElement) -> None:
        vr = elem.VR
        if vr == "SQ":
            elem.value = Sequence()
        elif vr == "UI":
            self._remap(elem)
        elif vr in _DUMMY:
            elem.value = _DUMMY[vr]
        elif vr in _STRING_VRS:
            elem.value = _DUMMY_TEXT
        elif vr in _NUMBER_VRS:
            elem.value = 0
        else:  # binary and AT: nothing meaningful to invent
            elem.value = None

    def _remap(self, elem: DataElement) -> None:
        values = _values(elem)
        if not values:
            return
        mapped = [self.uid(v) if v else v for v in values]
        elem.value = mapped if len(mapped) > 1 else mapped[0]


def _values(elem: DataElement) -> list[str]:
    if elem.value is None or elem.value == "":
        return []
    return _values_of(elem.value)


def _shift_dates(elem: DataElement, days: int) -> None:
    shifted: list[str] = []
    for value in _values(elem):
        text = value.strip()
        try:
            day = dt.datetime.strptime(text[:8], "%Y%m%d").date()
        except ValueError:
            # A date we cannot read (or a DT with only a year) cannot be shifted
            # faithfully; PS3.15 E.3.6 then leaves removal as the safe choice.
            shifted.append("")
            continue
        shifted.append((day + dt.timedelta(days=days)).strftime("%Y%m%d") + text[8:])
    kept = [v for v in shifted if v]
    elem.value = (kept if len(kept) > 1 else kept[0]) if kept else None


def _identifiers(ds: Dataset) -> list[str]:
    """Identifying strings of this data set, longest first, to cut out of descriptors."""
    found: set[str] = set()

    def add(value: object) -> None:
        for part in _values_of(value):
            for text in (part, strip_diacritics(part)):
                text = text.strip()
                if len(text) >= 2:
                    found.add(text)

    for keyword in _NAME_KEYWORDS:
        for name in _values_of(ds.get(keyword, "")):
            add(name)
            add(re.split(r"[\^=\s]+", name))
    for keyword in _VALUE_KEYWORDS:
        add(ds.get(keyword, ""))
    for item in ds.get("OtherPatientIDsSequence", []) or []:
        add(item.get("PatientID", ""))
    return sorted(found, key=len, reverse=True)


def _values_of(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _clean_text(elem: DataElement, identifiers: list[str]) -> None:
    """Clean Descriptors (PS3.15 E.3.5): keep the description, cut out every identifying
    value this data set carries (names, IDs, places; with and without diacritics), dates
    and long digit runs."""
    cleaned: list[str] = []
    for value in _values(elem):
        text = value
        for ident in identifiers:
            text = re.sub(rf"(?<!\w){re.escape(ident)}(?!\w)", " ", text, flags=re.IGNORECASE)
        text = _DATE_OR_NUMBER.sub(" ", text)
        cleaned.append(re.sub(r"\s+", " ", text).strip())
    elem.value = (cleaned if len(cleaned) > 1 else cleaned[0]) if cleaned else None
