"""Alembic environment: migrations run on the connection the store hands over, never from a URL.

The store opens the connection (with PostgreSQL's migration lock held) and passes it in
``config.attributes["connection"]``; see ``checker/store/migrate.py``.
"""

from alembic import context

from checker.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
