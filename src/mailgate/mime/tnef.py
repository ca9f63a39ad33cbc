"""Outlook ``winmail.dat`` (application/ms-tnef): the files inside become attachments (tnefparse)."""

from __future__ import annotations

from tnefparse import TNEF

from mailgate.mime.charsets import decode_8bit_header


def is_tnef(content_type: str, filename: str | None) -> bool:
    return content_type in ("application/ms-tnef", "application/vnd.ms-tnef") or (
        filename is not None and filename.strip().lower() == "winmail.dat"
    )


def extract_tnef(data: bytes, max_files: int) -> list[tuple[str, bytes]] | None:
    """(filename, bytes) of each file in a TNEF blob; None if it is not readable TNEF."""
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
    return files
