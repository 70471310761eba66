"""Alembic migrations of the database (run by ``core.db.migrate`` or ``alembic -c migrations/alembic.ini``)."""
