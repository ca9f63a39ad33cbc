"""Limits against hostile input: MIME depth, part count, header count/size, decoded sizes.

Past a limit the parser stops descending (or truncates), records a ``limit.*`` parse error and
still returns an envelope; the scan stage decides whether to quarantine (``errors.UNSCANNABLE``
for the limits past which parts were not read).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds applied by ``parse_message``; defaults suit a 25 MB SMTP size limit."""

    max_depth: int = 100
    """Nesting of multipart / message parts below the top level (``[mime] max_nesting``;
    Postfix's ``mime_nesting_limit`` default). Deeper parts are not read: unscannable."""
    max_parts: int = 500
    """MIME parts visited in one message (every leaf and container counts)."""
    max_headers: int = 1000
    """Top-level header fields kept."""
    max_header_bytes: int = 512 * 1024
    """Bytes of the top-level header block read."""
    max_attachment_bytes: int = 50 * 1024 * 1024
    """Decoded size of one attachment; a larger one is listed but its bytes are not stored."""
    max_text_chars: int = 1024 * 1024
    """Characters kept for ``text``."""
    max_html_chars: int = 512 * 1024
    """Characters of HTML sanitized; bleach/html5lib is slow and superlinear on junk markup,
    so a larger HTML body is left out of ``html`` (its text is still derived)."""
    max_addresses: int = 1000
    """Addresses kept per address header."""
    max_tnef_files: int = 100
    """Files extracted from one winmail.dat; one more makes the message unscannable."""
    max_nested_bytes: int = 64 * 1024 * 1024
    """Bytes of forwarded messages re-parsed to find the files inside them (a forward in a
    forward is read once per level); past it the rest is not opened: unscannable."""


DEFAULT_LIMITS = Limits()
