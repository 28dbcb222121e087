"""Alembic environment: runs on the connection handed over by ``opsbot.store.open_store``."""

from alembic import context

from opsbot.store import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline `alembic` CLI use is not supported
    raise RuntimeError("run migrations through opsbot.store.open_store()")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
