"""SQLite methods and intent appliers of the delivery area (see `store/delivery.py` for the records)."""

from __future__ import annotations

from mailgate.store.sqlite_base import SqliteBase


class DeliveryStoreMixin(SqliteBase):
    """The delivery part of `SqliteStore`."""
