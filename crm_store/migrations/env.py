"""Alembic environment: always runs on a connection handed in by `crm_store.migrate`.

Running on a given connection keeps one code path for the CLI, the server's start-up and the
tests, on both databases, inside an already running event loop.
"""

from __future__ import annotations

from alembic import context

from crm_store.models import Base
from crm_store.search import is_search_object

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `dealbot db upgrade` (crm_store.migrate.upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # Full-text search lives outside the models (FTS5 tables on SQLite, generated tsvector
    # columns and GIN indexes on PostgreSQL; see migration 0004): autogenerate must not drop them.
    include_object=lambda obj, name, type_, reflected, compare_to: not is_search_object(
        name, type_, reflected, getattr(getattr(obj, "table", None), "name", None)),
)
with context.begin_transaction():
    context.run_migrations()
