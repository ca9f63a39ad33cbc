"""The one thing the backend-neutral store modules need from a result row.

Why: ``*_logic`` modules map rows to records for both backends without importing either
driver; ``sqlite3.Row`` and ``asyncpg.Record`` both read a column by name.
"""

from __future__ import annotations

from typing import Any, Protocol


class Row(Protocol):
    """A result row read by column name (``sqlite3.Row``, ``asyncpg.Record``)."""

    def __getitem__(self, key: str, /) -> Any: ...


class KeyedRow(Row, Protocol):
    """A row that also names its columns (both drivers' rows do): what can be copied."""

    def keys(self) -> Any: ...


def row_dict(row: KeyedRow) -> dict[str, Any]:
    """A copy of ``row`` that can be changed (``sqlite3.Row`` iterates its values, not names)."""
    return {k: row[k] for k in row.keys()}  # noqa: SIM118
