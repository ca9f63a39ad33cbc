"""``parseErrors``: what the parser met on its way, so consumers know the envelope is best-effort.

Each entry is ``{"code": ..., "message": ...}``. Codes are stable, dotted and lower-case:
``defect.<StdlibDefectName>`` for ``email.errors`` defects, ``limit.<name>`` when a hostile-input
limit was hit (the ingest worker may quarantine on these), ``charset.*``, ``header.*``,
``body.*``, ``attachment.*`` and ``parse.*`` for fallbacks. The log is bounded, except that
codes in ``UNSCANNABLE`` are always kept: a sender must not be able to push the one error that
holds the message out of the log with a hundred harmless ones first.

Which errors make a message *unscannable* (quarantined with reason ``unscannable`` by the scan
stage, issue 12: "nothing that could hide an attachment passes as clean") is decided here, in
one place, by code; ``structure.py`` explains when each is raised.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_ERRORS = 100
MAX_RESERVED = 20
"""Unscannable entries kept past ``MAX_ERRORS`` (one is enough to hold the message)."""

UNSCANNABLE = frozenset(
    {
        "parse.structure",  # the stdlib parser raised (RecursionError on ~1000 levels...)
        "parse.internal",  # mailgate's own parser failed: nothing was walked
        "limit.depth",  # parts below [mime] max_nesting were never read
        "limit.nested-bytes",  # forwards inside forwards past the re-parse budget
        "limit.tnef-files",  # files of a winmail.dat past the extraction limit
        "structure.unsplittable",  # a multipart with content but no readable parts
        "structure.after-close",  # delimiter lines after a multipart's close delimiter
        "attachment.tnef-unreadable",  # TNEF signature, but the files could not be read
        "body.undecodable",  # a body whose encoding hid its content (uuencode, gzip64)
    }
)
"""Codes that mean "content the parser did not read may hold an attachment"."""


class ErrorLog:
    """Collects parse errors, dropping exact repeats and stopping at ``MAX_ERRORS``."""

    __slots__ = ("_reserved", "_seen", "items")

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []
        self._seen: set[tuple[str, str]] = set()
        self._reserved = 0

    def add(self, code: str, message: str) -> None:
        key = (code, message)
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self.items) < MAX_ERRORS:
            self.items.append({"code": code, "message": message})
            return
        if len(self.items) == MAX_ERRORS:
            self.items.append({"code": "limit.errors", "message": "further parse errors dropped"})
        if code in UNSCANNABLE and self._reserved < MAX_RESERVED:
            self._reserved += 1
            self.items.append({"code": code, "message": message})

    def __bool__(self) -> bool:
        return bool(self.items)


def limit_errors(envelope_parse_errors: list[dict[str, str]]) -> list[str]:
    """The ``limit.*`` codes in an envelope's ``parseErrors`` (input the worker may quarantine)."""
    return [e["code"] for e in envelope_parse_errors if e.get("code", "").startswith("limit.")]


def unscannable_errors(envelope_parse_errors: Iterable[object]) -> list[dict[str, str]]:
    """The entries of ``parseErrors`` that mean part of the message was never read."""
    out: list[dict[str, str]] = []
    for entry in envelope_parse_errors:
        if isinstance(entry, dict) and entry.get("code") in UNSCANNABLE:
            out.append({"code": str(entry["code"]), "message": str(entry.get("message") or "")})
    return out
