"""SQLite methods and intent appliers of the pipeline area (see `store/pipeline.py` for the records)."""

from __future__ import annotations

from mailgate.store.sqlite_base import SqliteBase


class PipelineStoreMixin(SqliteBase):
    """The pipeline part of `SqliteStore`."""
