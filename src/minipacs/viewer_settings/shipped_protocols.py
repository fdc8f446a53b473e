"""The hanging protocols minipacs ships: what a study opens with before anyone saved one.

An administrator's edit of a default (same name, `hanging_protocols.HangingProtocols.
save_default`) replaces the shipped one; deleting the edit brings the shipped one back.
The format is described in `hanging_protocols.py` and docs/reading.md. Window presets are
the viewer's CT presets (viewer/js/lut.js) or "default" (the image's own window).
"""

from __future__ import annotations

from typing import Any, Final

# Body parts by BodyPartExamined (PS3.16 CID 4031 code meanings as modalities send them)
# and the words a Vietnamese or English StudyDescription uses; matched without case.
_CHEST = r"CHEST|THORAX|LUNG|NGUC|NGỰC|PHOI|PHỔI"
_HEAD = r"HEAD|BRAIN|SKULL|DAU|ĐẦU|NAO|NÃO|SO|SỌ"
# A CT volume, not a scout, dose report or key-image series of one to a few images.
_VOLUME = {"minImages": 5}

SHIPPED: Final[tuple[dict[str, Any], ...]] = (
    {
        "name": "CT chest",
        "modality": "CT",
        "bodyPart": _CHEST,
        "layout": "1x2",
        "viewports": [
            {"window": "lung", "series": [{"description": r"lung|phổi|phoi", **_VOLUME},
                                          {"modality": "CT", "orientation": "axial", **_VOLUME},
                                          {}]},
            {"window": "mediastinum",
             "series": [{"description": r"medi|soft|trung th|mô mềm|mo mem", **_VOLUME},
                        {"modality": "CT", "orientation": "axial", **_VOLUME}, {}]},
        ],
    },
    {
        "name": "CT head",
        "modality": "CT",
        "bodyPart": _HEAD,
        "layout": "1x1",
        "viewports": [{"window": "brain",
                       "series": [{"modality": "CT", "orientation": "axial", **_VOLUME}, {}]}],
    },
    {
        "name": "CR/DX chest with prior",
        "modality": "CR|DX",
        "bodyPart": _CHEST,
        "minPriors": 1,
        "layout": "1x2",
        "viewports": [
            {"window": "default", "series": [{"study": "current"}]},
            {"window": "default", "series": [{"study": "prior", "modality": "CR|DX"}]},
        ],
    },
    {
        "name": "CR/DX chest",
        "modality": "CR|DX",
        "bodyPart": _CHEST,
        "layout": "1x1",
        "viewports": [{"window": "default", "series": [{}]}],
    },
    {
        "name": "MR brain",
        "modality": "MR",
        "bodyPart": _HEAD,
        "layout": "2x2",
        "viewports": [
            {"window": "default", "series": [{"description": r"t1"}, {}]},
            {"window": "default", "series": [{"description": r"t2(?!.*flair)"}, {}]},
            {"window": "default", "series": [{"description": r"flair"}, {}]},
            {"window": "default", "series": [{"description": r"dwi|diff|adc|trace"}, {}]},
        ],
    },
)
