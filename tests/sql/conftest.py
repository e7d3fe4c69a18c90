"""Fixtures of the SQL catalog tests: a real PostgreSQL server (see ``postgres.py``)."""

from __future__ import annotations

from tests.sql.postgres import postgres_server, postgres_url  # noqa: F401
