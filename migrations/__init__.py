"""Alembic migrations (date-prefixed files in versions/; each sets lock_timeout)."""
