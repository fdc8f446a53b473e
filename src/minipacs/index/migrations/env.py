"""Alembic environment: runs on the connection `minipacs.index.schema` hands it.

Never run standalone with a URL from a file: `minipacs db upgrade` / `minipacs db revision`
(and `serve`, on start) build the engine from `Settings` and pass the connection in.
"""

from __future__ import annotations

from alembic import context

from minipacs.index.models import Base
from minipacs.index.schema import for_dialect

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # Indexes a model limits to one database (e.g. PostgreSQL's pattern operators).
    include_object=for_dialect(connection.dialect.name),
)
with context.begin_transaction():
    context.run_migrations()
