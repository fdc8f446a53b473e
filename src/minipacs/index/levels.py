"""The levels of the Query/Retrieve information models (PS3.4 C.6)."""

from __future__ import annotations

from typing import Literal

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
DEPTH: dict[Level, int] = {level: i for i, level in enumerate(LEVELS)}
