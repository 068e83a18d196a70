"""Alembic's entry point: migrates on the connection the job store hands over
(``config.attributes["connection"]``, already inside its transaction); see app/jobs/store.py."""

from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
