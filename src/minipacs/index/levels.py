"""The levels of the Query/Retrieve information models (PS3.4 C.6) and their tables."""

from __future__ import annotations

from typing import Literal

from minipacs.index.models import Instance, Patient, Series, Study

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
DEPTH: dict[Level, int] = {level: i for i, level in enumerate(LEVELS)}
TABLES: dict[Level, type[Patient | Study | Series | Instance]] = {
    "PATIENT": Patient, "STUDY": Study, "SERIES": Series, "IMAGE": Instance,
}
