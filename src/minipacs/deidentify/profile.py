"""PS3.15 Table E.1-1: which action the Basic Profile and the chosen options ask for.

The Basic Application Level Confidentiality Profile column comes from the maintained
dicom-anonymizer package, which ships it as data per edition of the standard
(`dicomfields_2026c`). That package's own engine is not used: it keeps one process-wide
UID table (UIDs would link across exports), replaces dates by 00010101 instead of
removing or shifting them, does not descend into sequences and offers none of the
options. The three option columns come from `option_columns`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from pydicom.tag import BaseTag

from minipacs.deidentify import option_columns

# Effective actions (PS3.15 E.1.1 Table E.1-1 legend): X remove, Z zero length,
# D dummy value, U remap UID consistently, K keep, C clean (a shifted date or a
# cleaned descriptor), S a sequence kept whose items are de-identified in turn.
Action = Literal["X", "Z", "D", "U", "K", "C", "S"]

# Which edition of the Basic Profile column dicom-anonymizer should hand us.
BASIC_PROFILE_EDITION = "dicomfields_2026c"

# The table's compound actions resolved without knowing each IOD's attribute types
# (PS3.15 E.1.1: "X unless Z/D is required to maintain IOD conformance"): keeping the
# attribute with a zero-length or dummy value is always conformant and discloses nothing.
_COMPOUND: dict[str, Action] = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U",
    "Z_D_TAGS": "D", "X_Z_TAGS": "Z", "X_D_TAGS": "D", "X_Z_D_TAGS": "D",
    "X_Z_U_STAR_TAGS": "S",
}


@dataclass(frozen=True)
class ProfileOptions:
    """The Basic Profile plus the options a hospital chooses (PS3.15 E.3)."""

    retain_longitudinal_modified_dates: bool = False
    retain_device_identity: bool = False
    clean_descriptors: bool = False

    def method_codes(self) -> list[tuple[str, str]]:
        """(CodeValue, CodeMeaning) of PS3.16 CID 7050 for DeidentificationMethodCodeSequence."""
        from pydicom.sr.codedict import codes  # ~0.3 s to import: only when exporting

        chosen = [codes.DCM.BasicApplicationConfidentialityProfile]
        if self.retain_longitudinal_modified_dates:
            chosen.append(codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption)
        if self.retain_device_identity:
            chosen.append(codes.DCM.RetainDeviceIdentityOption)
        if self.clean_descriptors:
            chosen.append(codes.DCM.CleanDescriptorsOption)
        return [(str(code.value), str(code.meaning)) for code in chosen]

    def names(self) -> list[str]:
        return [meaning for _, meaning in self.method_codes()]


@functools.cache
def _basic_profile() -> tuple[dict[int, Action], tuple[tuple[int, int, int, int, Action], ...]]:
    """Single tags → action, and (group, element, group mask, element mask, action) ranges."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    table = dicom_anonymization_database_selector(BASIC_PROFILE_EDITION)
    single: dict[int, Action] = {}
    ranges: list[tuple[int, int, int, int, Action]] = []
    for category, action in _COMPOUND.items():
        for entry in table[category]:
            if len(entry) == 2:
                single[(entry[0] << 16) | entry[1]] = action
            else:
                group, element, group_mask, element_mask = entry
                ranges.append((group, element, group_mask, element_mask, action))
    return single, tuple(ranges)


def basic_action(tag: BaseTag) -> Action | None:
    """The Basic Profile's action for a standard attribute, None when the table does not
    list it (then it is kept; sequences are still descended). Private tags are X."""
    if tag.is_private:
        return "X"
    single, ranges = _basic_profile()
    found = single.get(int(tag))
    if found is not None:
        return found
    for group, element, group_mask, element_mask, action in ranges:
        if (tag.group & group_mask) == (group & group_mask) and \
                (tag.element & element_mask) == (element & element_mask):
            return action
    return None


def action_for(tag: BaseTag, options: ProfileOptions) -> Action | None:
    """The action for `tag` under the Basic Profile with `options` (Table E.1-1 columns)."""
    number = int(tag)
    if options.retain_device_identity and number in option_columns.RETAIN_DEVICE_IDENTITY:
        return "K"
    if options.retain_longitudinal_modified_dates and \
            number in option_columns.RETAIN_LONGITUDINAL_MODIFIED_DATES:
        return "C"
    if options.clean_descriptors and number in option_columns.CLEAN_DESCRIPTORS:
        return "C"
    return basic_action(tag)
