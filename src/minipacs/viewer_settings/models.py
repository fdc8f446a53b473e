"""The `hanging_protocols` table: one row per saved protocol.

`owner` is the principal's audit name (`user:alice`, `token:ris`) for a user's own
protocol, or "" for a default an administrator edited (it replaces the shipped default of
the same name, `shipped_protocols.py`). `body` is the protocol as JSON, checked by
`hanging_protocols.checked_protocol` before it is written.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from minipacs.index.models import Base


class HangingProtocolRow(Base):
    __tablename__ = "hanging_protocols"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_hanging_protocols_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(160), default="")
    name: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[str] = mapped_column(String(160), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime)
