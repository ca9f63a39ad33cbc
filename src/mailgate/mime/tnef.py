"""Outlook ``winmail.dat`` (application/ms-tnef): the files inside become attachments (tnefparse)."""

from __future__ import annotations

from tnefparse import TNEF

from mailgate.mime.charsets import decode_8bit_header

TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"
"""0x223E9F78, little-endian: the first four bytes of every TNEF stream ([MS-OXTNEF] 2.1.3.1)."""


def looks_like_tnef(data: bytes) -> bool:
    return data.startswith(TNEF_SIGNATURE)


def is_tnef(content_type: str, filename: str | None) -> bool:
    return content_type in ("application/ms-tnef", "application/vnd.ms-tnef") or (
        filename is not None and filename.strip().lower() == "winmail.dat"
    )


def extract_tnef(data: bytes, max_files: int) -> tuple[list[tuple[str, bytes]], str | None] | None:
    """((filename, bytes) of each file, plain-text body or None) of a TNEF blob; None if the
    blob is not readable TNEF. Outlook puts the body there when it sent "rich text" mail."""
    try:
        tnef = TNEF(data, do_checksum=False)
    except Exception:  # tnefparse raises bare ValueError/struct.error/IndexError on bad input
        return None
    files: list[tuple[str, bytes]] = []
    for att in tnef.attachments[:max_files]:
        try:
            name = att.long_filename()
        except Exception:  # tnefparse decodes the 8-bit name as strict UTF-8
            raw_name = getattr(att, "_name", b"")
            name = decode_8bit_header(raw_name) if isinstance(raw_name, bytes) else ""
        if isinstance(name, bytes):
            name = decode_8bit_header(name)
        data_bytes = att.data if isinstance(att.data, bytes) else b""
        files.append((str(name or "").strip("\x00"), data_bytes))
    body = tnef.body
    if isinstance(body, bytes):
        body = decode_8bit_header(body.rstrip(b"\x00"))
    return files, (body.rstrip("\x00") if isinstance(body, str) and body.strip() else None)
