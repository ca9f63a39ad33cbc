"""Attachment records: sanitized filenames, sniffed types, hashes, and handing bytes to the store.

The envelope carries metadata only; the bytes go to a ``BlobSink`` (content-addressed store under
the data dir, owned by the caller). Filenames come from hostile senders and end up on disks and
in download dialogs, so they are reduced to a safe basename (see ``sanitize_filename``).
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import unicodedata
from collections.abc import Callable

import filetype

from mailgate.envelope import Attachment

BlobSink = Callable[[bytes], str]
"""Stores attachment bytes content-addressed and returns their sha256 hex digest."""


class BlobSinkError(Exception):
    """The blob sink failed (disk full, I/O error): a storage problem, not a parse problem.

    ``parse_message`` lets it propagate (with the sink's exception as ``__cause__``) so the
    ingest worker retries the spooled message instead of storing an envelope missing files.
    """


MAX_FILENAME_BYTES = 255
"""Most file systems cap a name at 255 bytes; the cap keeps the extension."""
_MAX_EXT_CHARS = 16
_RESERVED = re.compile(r'[<>:"|?*\\/]')
_SPACES = re.compile(r"\s+")
_WINDOWS_DEVICES = re.compile(r"^(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\.|$)", re.IGNORECASE)
# A fixed table, not the host's /etc/mime.types, so names do not depend on the machine.
_TYPES = mimetypes.MimeTypes(filenames=())
_EXTRA_EXT = {
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "text/rfc822-headers": ".txt",
    "text/calendar": ".ics",
    "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat",
    "image/jpeg": ".jpg",
    "text/plain": ".txt",
    "application/octet-stream": ".bin",
    "image/heic": ".heic",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/pgp-signature": ".asc",
}
_SNIFF_BYTES = 8192


def extension_for(content_type: str) -> str:
    ext = _EXTRA_EXT.get(content_type)
    if ext is None:
        ext = _TYPES.guess_extension(content_type, strict=False) or ".bin"
    return ext


def type_for_filename(name: str) -> str:
    """Content type from a file name's extension (for files unpacked from winmail.dat)."""
    guessed, _ = _TYPES.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def _drop_invisible(name: str) -> str:
    # Control (Cc), format (Cf: bidi overrides such as U+202E that disguise ".exe" as ".pdf",
    # zero-width characters), surrogates and unassigned code points.
    return "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Cn"))


def sanitize_filename(name: str | None, content_type: str, index: int) -> str:
    """A safe basename: no path parts, control/bidi characters, leading dots or device names.

    Length-capped at ``MAX_FILENAME_BYTES`` (UTF-8) keeping the extension; when nothing usable is left,
    ``attachment-<index><ext>`` with the extension of the content type.
    """
    if name:
        name = unicodedata.normalize("NFC", name)
        # Basename only: both separators, since the name may come from Windows or Mac senders.
        parts = [p for p in re.split(r"[\\/]", name) if p.strip(" .")]
        name = parts[-1] if parts else ""
        name = _drop_invisible(name)
        name = _RESERVED.sub("_", name)
        name = _SPACES.sub(" ", name).strip()
        name = name.lstrip(". ").rstrip(". ")
        if _WINDOWS_DEVICES.match(name):
            name = "_" + name
        if len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
            stem, dot, ext = name.rpartition(".")
            if not (dot and 0 < len(ext) <= _MAX_EXT_CHARS and stem):
                stem, ext = name, ""
            budget = MAX_FILENAME_BYTES - len(ext.encode("utf-8")) - (1 if ext else 0)
            stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(". ")
            name = f"{stem}.{ext}" if ext else stem
    if not name:
        name = f"attachment-{index}{extension_for(content_type)}"
    return name


def sniff_type(data: bytes) -> str | None:
    """The content type the bytes look like (magic numbers), regardless of what was declared."""
    if not data:
        return None
    head = data[:_SNIFF_BYTES]
    try:
        kind = filetype.guess_mime(head)
    except (TypeError, ValueError):
        kind = None
    if kind:
        return str(kind)
    if b"\x00" in head:
        return "application/octet-stream"
    lowered = head[:512].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    if lowered.startswith(b"begin:vcalendar"):
        return "text/calendar"
    return "text/plain"


def stable_attachment_id(message_key: str, index: int, sha256: str) -> str:
    """Ids that stay the same when the same message is re-processed (idempotent ingest)."""
    digest = hashlib.sha256(f"{message_key}:{index}:{sha256}".encode()).hexdigest()
    return f"att_{digest[:26]}"


def make_attachment(
    *,
    data: bytes,
    filename: str | None,
    content_type: str,
    disposition: str,
    content_id: str | None,
    index: int,
    message_key: str,
    blob_sink: BlobSink | None,
    store: bool = True,
) -> Attachment:
    """One envelope attachment record; the bytes go to ``blob_sink`` when one is given."""
    if blob_sink is not None and store:
        try:
            sha = blob_sink(data)
        except Exception as exc:
            raise BlobSinkError(str(exc)) from exc
    else:
        sha = hashlib.sha256(data).hexdigest()
    return {
        "id": stable_attachment_id(message_key, index, sha),
        "filename": sanitize_filename(filename, content_type, index),
        "contentType": content_type,
        "detectedType": sniff_type(data),
        "size": len(data),
        "sha256": sha,
        "disposition": disposition,
        "contentId": content_id,
        "url": None,
    }
