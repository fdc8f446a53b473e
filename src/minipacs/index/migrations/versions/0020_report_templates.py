"""Report templates (reports/templates.py), with the defaults a hospital starts from.

Revision ID: 0020
Revises: 0019

The defaults are written here, as they ship: later edits by an administrator are the
hospital's own and no upgrade overwrites them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# (name, modalities, body parts (BodyPartExamined, PS3.16 CID 4031 code meanings), findings,
# conclusion)
DEFAULTS = [
    ("CT sọ não", "CT", "HEAD BRAIN SKULL",
     "Chụp CT sọ não không tiêm thuốc cản quang, lát cắt 5 mm.\n"
     "- Nhu mô não: không thấy ổ tăng hay giảm tỷ trọng bất thường.\n"
     "- Hệ thống não thất: không giãn, đường giữa không di lệch.\n"
     "- Khoang dưới nhện, các bể não: bình thường.\n"
     "- Xương sọ: không thấy đường vỡ.",
     "Hiện tại chưa phát hiện bất thường trên phim CT sọ não."),
    ("CT ngực", "CT", "CHEST THORAX LUNG",
     "Chụp CT ngực, cửa sổ nhu mô và trung thất.\n"
     "- Nhu mô phổi hai bên: không thấy nốt hay đám mờ bất thường.\n"
     "- Khí phế quản: thông thoáng.\n"
     "- Trung thất: không thấy hạch to.\n"
     "- Màng phổi: không tràn dịch, không tràn khí.",
     "Hiện tại chưa phát hiện bất thường trên phim CT ngực."),
    ("CT bụng", "CT", "ABDOMEN ABDOMENPELVIS PELVIS",
     "Chụp CT bụng có tiêm thuốc cản quang.\n"
     "- Gan, lách, tụy, hai thận: kích thước và tỷ trọng bình thường.\n"
     "- Đường mật trong và ngoài gan: không giãn.\n"
     "- Ống tiêu hóa: không thấy dày thành khu trú.\n"
     "- Không thấy dịch tự do ổ bụng, không thấy hạch to.",
     "Hiện tại chưa phát hiện bất thường trên phim CT bụng."),
    ("MR sọ não", "MR", "HEAD BRAIN",
     "Chụp cộng hưởng từ sọ não các chuỗi xung T1W, T2W, FLAIR, DWI.\n"
     "- Nhu mô não: không thấy tín hiệu bất thường, không hạn chế khuếch tán.\n"
     "- Hệ thống não thất: không giãn, đường giữa không di lệch.\n"
     "- Tuyến yên, hố sau: bình thường.",
     "Hiện tại chưa phát hiện bất thường trên phim cộng hưởng từ sọ não."),
    ("X-quang ngực thẳng", "CR DX", "CHEST",
     "Phim X-quang ngực thẳng.\n"
     "- Hai phế trường: sáng đều, không thấy đám mờ.\n"
     "- Bóng tim: không to.\n"
     "- Góc sườn hoành hai bên: nhọn.\n"
     "- Khung xương lồng ngực: bình thường.",
     "Hiện tại chưa phát hiện bất thường trên phim X-quang ngực."),
    ("Siêu âm bụng", "US", "ABDOMEN",
     "Siêu âm ổ bụng tổng quát.\n"
     "- Gan: kích thước bình thường, nhu mô đồng nhất.\n"
     "- Túi mật: không sỏi, thành không dày.\n"
     "- Tụy, lách: bình thường.\n"
     "- Hai thận: không sỏi, không giãn đài bể thận.\n"
     "- Bàng quang: thành đều. Không có dịch tự do ổ bụng.",
     "Hiện tại chưa phát hiện bất thường trên siêu âm ổ bụng."),
]


def upgrade() -> None:
    table = op.create_table(
        "report_templates",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("modalities", sa.String(64), nullable=False),
        sa.Column("body_parts", sa.String(256), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("conclusion", sa.Text(), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    op.bulk_insert(table, [
        {"name": name, "modalities": modalities, "body_parts": parts, "findings": findings,
         "conclusion": conclusion, "updated_by": "minipacs", "updated_at": now}
        for name, modalities, parts, findings, conclusion in DEFAULTS])


def downgrade() -> None:
    op.drop_table("report_templates")
