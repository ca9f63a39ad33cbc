"""Scan: attachments and parse limits that make a message too risky to deliver unseen.

Findings become quarantine candidates (the ``quarantine`` stage decides); nothing is
delivered or dropped here. Checks, per attachment:
  ``oversize``           larger than ``pipeline.max_attachment_size``;
  ``executable``         the *sniffed* type (magic bytes, not the name or the declared type)
                         is an executable (PE, ELF, Mach-O, MSI, shortcut);
  ``blocked-type``       the sniffed type matches ``pipeline.blocked_types``, or is not in
                         ``pipeline.allowed_types`` when that list is set;
  ``double-extension``   a document extension followed by a blocked one (``invoice.pdf.exe``),
                         or a right-to-left override hiding the real extension;
  ``blocked-extension``  the name ends in one of ``pipeline.blocked_extensions`` (also inside
                         a zip archive);
  ``macro``              a macro-enabled Office file (``.docm``/``.xlsm``…, an OOXML package with
                         ``vbaProject.bin``, an OLE document with a VBA project);
  ``archive-bomb``       a zip/gzip whose expanded size exceeds ``pipeline.max_compression_ratio``
                         times its size (nested archives counted), or over 1 GiB expanded;
  ``unscannable``        a zip that cannot be opened although it has the zip signature, or
                         archives nested deeper than ``MAX_ARCHIVE_DEPTH`` (their members
                         could not be checked);
and for the message: ``unscannable`` when ``parseErrors`` says part of the message was never
read (``mime.errors.UNSCANNABLE``: parser failure, nesting past ``[mime] max_nesting``, a
multipart that could not be split...; see ``mime/structure.py`` for the exact line), and
``parse-limit`` when the parser hit another hostile-input limit (``limit.*``).

Files inside forwarded messages (an attachment's ``contains``, filled by the parser) are
checked like top-level attachments, named by their ``path`` (``fwd.eml/invoice.exe``).
"""

from __future__ import annotations

import fnmatch
import io
import struct
import zipfile
from collections.abc import Iterable
from typing import Any

import filetype

from mailgate.config import PipelineConfig
from mailgate.envelope import Envelope
from mailgate.mime.errors import UNSCANNABLE, limit_errors, unscannable_errors
from mailgate.pipeline.base import Context, Quarantine, Verdict

EXECUTABLE_TYPES = (
    "application/x-msdownload",
    "application/x-dosexec",
    "application/vnd.microsoft.portable-executable",
    "application/x-executable",
    "application/x-elf",
    "application/x-mach-binary",
    "application/x-sharedlib",
    "application/x-msi",
    "application/x-ms-installer",
    "application/x-ms-shortcut",
)
MACRO_EXTENSIONS = frozenset(
    {"docm", "dotm", "xlsm", "xltm", "xlam", "xlsb", "pptm", "potm", "ppsm", "ppam", "sldm"}
)
DOCUMENT_EXTENSIONS = frozenset(
    {
        "pdf",
        "doc",
        "docx",
        "xls",
        "xlsx",
        "ppt",
        "pptx",
        "odt",
        "ods",
        "rtf",
        "txt",
        "csv",
        "jpg",
        "jpeg",
        "png",
        "gif",
        "bmp",
        "tif",
        "tiff",
        "zip",
        "rar",
        "7z",
        "html",
        "htm",
        "mp3",
        "mp4",
        "wav",
        "mov",
        "eml",
        "msg",
        "xml",
        "json",
    }
)
RLO = "\u202e"
MAX_EXPANDED = 1024**3
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE_VBA = "_VBA_PROJECT".encode("utf-16-le")
_MIN_BOMB = 10 * 1024 * 1024
"""Below this expanded size a high ratio is harmless (a zipped text file compresses 100:1)."""

MAX_ARCHIVE_DEPTH = 3
"""Archives inside archives opened this deep; one more level is unscannable (bounded work)."""
# What zipfile raises on hostile or unusual archives: NotImplementedError is its answer to an
# unsupported compression method, RuntimeError to an encrypted member. Each makes the archive
# unscannable (quarantined), never clean.
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError)

SIZE_LIMITS = frozenset({"limit.errors", "limit.text", "limit.html-size"})
"""parseErrors limit codes that mean "cut short", not "hostile structure": no quarantine."""


def _ext(name: str) -> list[str]:
    parts = name.lower().strip().rstrip(". ").split(".")
    return parts[1:] if len(parts) > 1 else []


def _matches(value: str, globs: Iterable[str]) -> bool:
    v = value.lower()
    return any(fnmatch.fnmatchcase(v, g.lower()) for g in globs)


def filename_findings(name: str, cfg: PipelineConfig) -> list[Quarantine]:
    out: list[Quarantine] = []
    blocked = {e.lower().lstrip(".") for e in cfg.blocked_extensions}
    if RLO in name:
        out.append(Quarantine("double-extension", f"{name!r}: right-to-left override in the name"))
        name = name.replace(RLO, "")
    exts = _ext(name)
    if not exts:
        return out
    last = exts[-1]
    if last in blocked:
        if len(exts) >= 2 and exts[-2] in DOCUMENT_EXTENSIONS:
            out.append(Quarantine("double-extension", f"{name}: .{exts[-2]}.{last}"))
        else:
            out.append(Quarantine("blocked-extension", f"{name}: .{last}"))
    if last in MACRO_EXTENSIONS:
        out.append(Quarantine("macro", f"{name}: macro-enabled Office file (.{last})"))
    return out


def _zip_scan(
    data: bytes, cfg: PipelineConfig, label: str, depth: int = 0
) -> tuple[int, list[Quarantine]]:
    """(expanded size, findings) of a zip, looking into nested archives up to
    ``MAX_ARCHIVE_DEPTH``; an archive it cannot open, or nested deeper, is ``unscannable``."""
    findings: list[Quarantine] = []
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except _ZIP_ERRORS as exc:
        return 0, [Quarantine("unscannable", f"{label}: zip unreadable ({type(exc).__name__})")]
    expanded = 0
    has_vba = False
    for info in infos[:10000]:
        expanded += info.file_size
        member = info.filename.rsplit("/", 1)[-1]
        if member.lower() == "vbaproject.bin":
            has_vba = True
            continue
        for f in filename_findings(member, cfg):
            if f.reason in ("blocked-extension", "double-extension"):
                findings.append(Quarantine(f.reason, f"{label} contains {f.detail}"))
        if (
            member.lower().endswith((".zip", ".jar", ".docx", ".xlsx", ".pptx"))
            and info.file_size <= 64 * 1024 * 1024
            and not info.flag_bits & 0x1
        ):
            if depth >= MAX_ARCHIVE_DEPTH:
                findings.append(
                    Quarantine(
                        "unscannable",
                        f"{label}/{member}: archives nested deeper than {MAX_ARCHIVE_DEPTH}",
                    )
                )
                continue
            try:
                inner = zf.read(info)
            except _ZIP_ERRORS as exc:
                findings.append(
                    Quarantine(
                        "unscannable", f"{label}/{member}: unreadable ({type(exc).__name__})"
                    )
                )
                continue
            inner_size, inner_findings = _zip_scan(inner, cfg, f"{label}/{member}", depth + 1)
            expanded += max(0, inner_size - info.file_size)
            findings.extend(inner_findings)
        if expanded > MAX_EXPANDED:
            break
    if has_vba:
        findings.append(Quarantine("macro", f"{label}: Office package with a VBA project"))
    if len(infos) > 10000:
        findings.append(Quarantine("archive-bomb", f"{label}: {len(infos)} entries"))
    return expanded, findings


def content_findings(
    data: bytes, name: str, sniffed: str | None, cfg: PipelineConfig
) -> list[Quarantine]:
    """Findings that need the attachment's bytes: macros in OLE files, archive bombs."""
    out: list[Quarantine] = []
    if data.startswith(_OLE_MAGIC) and _OLE_VBA in data:
        out.append(Quarantine("macro", f"{name}: OLE document with a VBA project"))
    if data.startswith(b"PK\x03\x04"):
        expanded, findings = _zip_scan(data, cfg, name)
        out.extend(findings)
        ratio = expanded / max(1, len(data))
        if expanded > MAX_EXPANDED or (expanded >= _MIN_BOMB and ratio > cfg.max_compression_ratio):
            out.append(
                Quarantine(
                    "archive-bomb", f"{name}: {len(data)} bytes expand to {expanded} ({ratio:.0f}x)"
                )
            )
    elif data.startswith(b"\x1f\x8b") and len(data) >= 18:
        # RFC 1952: ISIZE, the input size modulo 2^32, ends the member.
        expanded = struct.unpack("<I", data[-4:])[0]
        ratio = expanded / max(1, len(data))
        if expanded >= _MIN_BOMB and ratio > cfg.max_compression_ratio:
            out.append(
                Quarantine(
                    "archive-bomb", f"{name}: gzip of {len(data)} bytes expands to {expanded}"
                )
            )
    return out


def type_findings(name: str, sniffed: str, declared: str, cfg: PipelineConfig) -> list[Quarantine]:
    out: list[Quarantine] = []
    if sniffed and _matches(sniffed, EXECUTABLE_TYPES):
        out.append(
            Quarantine(
                "executable", f"{name}: content is {sniffed} (declared {declared or 'none'})"
            )
        )
    elif sniffed and _matches(sniffed, cfg.blocked_types):
        out.append(Quarantine("blocked-type", f"{name}: content is {sniffed}"))
    elif sniffed and cfg.allowed_types and not _matches(sniffed, cfg.allowed_types):
        out.append(Quarantine("blocked-type", f"{name}: content {sniffed} is not in allowed_types"))
    if not sniffed and declared and _matches(declared, EXECUTABLE_TYPES):
        out.append(Quarantine("executable", f"{name}: declared {declared}"))
    return out


_CONTAINER_TYPES = (
    "",
    "application/octet-stream",
    "application/zip",
    "application/x-zip-compressed",
    "application/gzip",
    "application/x-gzip",
    "application/java-archive",
    "application/msword",
    "application/vnd.ms-*",
    "application/vnd.openxmlformats-officedocument.*",
    "application/x-ole-storage",
    "application/x-cfb",
    "application/cdfv2",
)


def _needs_bytes(sniffed: str, name: str) -> bool:
    """Only archives and Office containers (or unknown content) are opened; a PDF or a JPEG
    of 20 MB is not read back from disk for nothing."""
    if _matches(sniffed, _CONTAINER_TYPES):
        return True
    return name.lower().endswith((".zip", ".gz", ".doc", ".xls", ".ppt", ".docx", ".xlsx", ".pptx"))


def _size(att: dict[str, Any]) -> int:
    size = att.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


def scanned_files(attachments: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, record) of every file to check: each attachment, then the files inside it
    (``contains``: what the parser found inside a forwarded message), named by their path."""
    out: list[tuple[str, dict[str, Any]]] = []
    for att in attachments:
        out.append((str(att.get("filename") or att.get("id") or "attachment"), att))
        inner = att.get("contains")
        for sub in inner if isinstance(inner, list) else ():
            if isinstance(sub, dict):
                out.append((str(sub.get("path") or sub.get("filename") or "attachment"), sub))
    return out


def unscannable_finding(parse_errors: Iterable[object]) -> Quarantine | None:
    """``unscannable`` with the parse errors that say part of the message was never read."""
    hidden = unscannable_errors(parse_errors)
    if not hidden:
        return None
    return Quarantine("unscannable", "; ".join(f"{e['code']}: {e['message']}" for e in hidden))


class ScanStage:
    name = "scan"
    description = "attachment size, sniffed type, names, macros, archive bombs, parse limits"

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        cfg = ctx.config
        view = ctx.view(env)
        findings: list[Quarantine] = []
        for name, att in scanned_files(view.attachments):
            size = _size(att)
            if cfg.max_attachment_size and size > cfg.max_attachment_size:
                findings.append(
                    Quarantine("oversize", f"{name}: {size} bytes > {cfg.max_attachment_size}")
                )
            sniffed = str(att.get("detectedType") or "")
            declared = str(att.get("contentType") or "")
            data: bytes | None = None
            sha = att.get("sha256")
            if (
                isinstance(sha, str)
                and sha
                and size <= max(cfg.max_attachment_size, 1) * 2
                and _needs_bytes(sniffed, name)
            ):
                data = await ctx.ports.attachment_bytes(sha)
            if data is not None and not sniffed:
                kind = filetype.guess(data[:8192])
                sniffed = kind.mime if kind is not None else ""
            findings.extend(type_findings(name, sniffed, declared, cfg))
            findings.extend(filename_findings(name.rsplit("/", 1)[-1], cfg))
            if data is not None:
                findings.extend(content_findings(data, name, sniffed, cfg))
        errors = [e for e in env.get("parseErrors") or [] if isinstance(e, dict)]
        hidden = unscannable_finding(errors)
        if hidden is not None:
            findings.append(hidden)
        # Size cut-offs are not hostility: a 1 MB pasted log (nodemailer's large_text.eml) is
        # real support mail. Its text is truncated and says so in parseErrors, the raw message
        # is kept whole, and it is delivered. "limit.errors" only says the error list was cut.
        limits = [c for c in limit_errors(errors) if c not in SIZE_LIMITS and c not in UNSCANNABLE]
        if limits:
            findings.append(Quarantine("parse-limit", ", ".join(sorted(set(limits)))))
        seen: set[tuple[str, str]] = set()
        for f in findings:
            if (f.reason, f.detail) in seen:
                continue
            seen.add((f.reason, f.detail))
            ctx.quarantine.append(f)
            ctx.note(f"{f.reason}: {f.detail}")
        if not findings:
            ctx.note(f"{len(view.attachments)} attachment(s), nothing found")
        return None


STAGE = ScanStage()
