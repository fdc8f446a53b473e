"""Patients keep OtherPatientIDsSequence, every distinct item any of their instances
brought, for sequence matching on it (IssuerOfPatientID, TypeOfPatientID with PatientID).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 19:47:21.050662
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# OtherPatientIDsSequence, frozen here so that this revision never changes meaning.
_TAG = "00101002"
_BATCH = 500


def _dumps(model: Any) -> str:
    return json.dumps(model, ensure_ascii=False, separators=(",", ":"))


def _tables() -> tuple[Any, Any, Any, Any]:
    instances = sa.table(
        "instances", sa.column("id"), sa.column("series_pk"), sa.column("metadata_json")
    )
    series = sa.table("series", sa.column("id"), sa.column("study_pk"))
    studies = sa.table("studies", sa.column("id"), sa.column("patient_pk"))
    patients = sa.table("patients", sa.column("id"), sa.column("sequences_json"))
    return instances, series, studies, patients


def upgrade() -> None:
    """Each patient's kept sequences gain the distinct OtherPatientIDsSequence items of
    all its instances, oldest first, from the stored DICOM JSON (no blob is read).
    Patients whose sequences were never derived (NULL) are left to `verify
    --rebuild-index`, as before."""
    bind = op.get_bind()
    instances, series, studies, patients = _tables()
    rows = bind.execute(
        sa.select(studies.c.patient_pk, instances.c.metadata_json)
        .select_from(
            instances.join(series, instances.c.series_pk == series.c.id).join(
                studies, series.c.study_pk == studies.c.id
            )
        )
        .where(instances.c.metadata_json.like(f'%"{_TAG}"%'))
        .order_by(instances.c.id)
    )
    items: dict[int, dict[str, Any]] = {}
    for patient_pk, text in rows:
        for item in (json.loads(text).get(_TAG) or {}).get("Value", []):
            items.setdefault(patient_pk, {}).setdefault(_dumps(item), item)
    pks = list(items)
    update = (
        sa.update(patients)
        .where(patients.c.id == sa.bindparam("pk"))
        .values(sequences_json=sa.bindparam("kept"))
    )
    for start in range(0, len(pks), _BATCH):
        batch = pks[start : start + _BATCH]
        current = bind.execute(
            sa.select(patients.c.id, patients.c.sequences_json).where(patients.c.id.in_(batch))
        )
        values = []
        for pk, text in current:
            if text is None:
                continue
            kept = json.loads(text)
            kept[_TAG] = {"vr": "SQ", "Value": list(items[pk].values())}
            values.append({"pk": pk, "kept": _dumps(kept)})
        if values:
            bind.execute(update, values)


def downgrade() -> None:
    """Revision 0003 did not keep OtherPatientIDsSequence: take it out again."""
    bind = op.get_bind()
    _, _, _, patients = _tables()
    rows = bind.execute(
        sa.select(patients.c.id, patients.c.sequences_json).where(
            patients.c.sequences_json.like(f'%"{_TAG}"%')
        )
    ).all()
    update = (
        sa.update(patients)
        .where(patients.c.id == sa.bindparam("pk"))
        .values(sequences_json=sa.bindparam("kept"))
    )
    values = []
    for pk, text in rows:
        kept = json.loads(text)
        kept.pop(_TAG, None)
        values.append({"pk": pk, "kept": _dumps(kept)})
    if values:
        bind.execute(update, values)
