"""``parseErrors``: what the parser met on its way, so consumers know the envelope is best-effort.

Each entry is ``{"code": ..., "message": ...}``. Codes are stable, dotted and lower-case:
``defect.<StdlibDefectName>`` for ``email.errors`` defects, ``limit.<name>`` when a hostile-input
limit was hit (the ingest worker may quarantine on these), ``charset.*``, ``header.*``,
``body.*``, ``attachment.*`` and ``parse.*`` for fallbacks. The log is bounded.
"""

from __future__ import annotations

MAX_ERRORS = 100


class ErrorLog:
    """Collects parse errors, dropping exact repeats and stopping at ``MAX_ERRORS``."""

    __slots__ = ("_seen", "items")

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, code: str, message: str) -> None:
        key = (code, message)
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self.items) < MAX_ERRORS:
            self.items.append({"code": code, "message": message})
        elif len(self.items) == MAX_ERRORS:
            self.items.append({"code": "limit.errors", "message": "further parse errors dropped"})

    def __bool__(self) -> bool:
        return bool(self.items)


def limit_errors(envelope_parse_errors: list[dict[str, str]]) -> list[str]:
    """The ``limit.*`` codes in an envelope's ``parseErrors`` (input the worker may quarantine)."""
    return [e["code"] for e in envelope_parse_errors if e.get("code", "").startswith("limit.")]
