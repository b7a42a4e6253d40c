"""Alembic environment: always runs on a connection handed in by `crm_store.migrate`.

Running on a given connection keeps one code path for the CLI, the server's start-up and the
tests, on both databases, inside an already running event loop.
"""

from __future__ import annotations

from alembic import context

from crm_store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `dealbot db upgrade` (crm_store.migrate.upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
