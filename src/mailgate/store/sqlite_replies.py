"""SQLite methods and intent appliers of the replies area (see `store/replies.py` for the records)."""

from __future__ import annotations

from mailgate.store.sqlite_base import SqliteBase


class ReplyStoreMixin(SqliteBase):
    """The replies part of `SqliteStore`."""
