"""Walking the MIME tree: which parts are the body, which are attachments, forwards and reports.

Rules (close to what mail clients show):

* ``multipart/alternative``: the first ``text/plain`` is the text, the last ``text/html`` the
  HTML (RFC 2046 section 5.1.4: later alternatives are richer).
* Other inline ``text/plain``/``text/html`` parts (not ``Content-Disposition: attachment``) are
  body text, joined in order (HTML outside an alternative adds its derived text); one with an
  explicit disposition ``filename`` is also listed as an attachment. Every other leaf is an
  attachment (inline images keep ``disposition: inline`` and their ``contentId``).
* ``message/rfc822``/``message/global`` (forwards) become one ``.eml`` attachment with their
  exact bytes and a ``forwarded`` entry with their subject, from, date and message id; their
  own parts are not walked for the outer body, but they are parsed and walked for *files*:
  every file inside (at any depth, forwards in forwards included) is listed in the ``.eml``
  attachment's ``contains`` (same fields as an attachment, plus ``path``), its bytes stored,
  so the scan stage checks them like top-level attachments.
* ``message/delivery-status`` feeds ``bounce`` and its text is shown in ``text``.
* ``winmail.dat`` (TNEF) is unpacked into the files (and body) it carries.
* A nested multipart reusing its parent's boundary is regrouped (Outlook Express for Mac).
* Depth and part-count limits stop the walk with a ``limit.*`` parse error.

The walk is iterative (an explicit stack), so no depth of input can exhaust the Python stack;
depth is counted across forwards (a forward's own header block is one level below the part
holding it), as Postfix counts ``mime_nesting_limit``. ``Limits.max_depth`` is ``[mime]
max_nesting`` (100, Postfix's default).

Unscannable (issue 12): *nothing that could hide an attachment passes as clean.* The walk
records one of the ``errors.UNSCANNABLE`` codes, and the scan stage quarantines the message
with reason ``unscannable``, exactly when part of the input was not read as MIME parts:

* ``parse.structure``: the stdlib parser raised (RecursionError past ~1000 levels) on the
  message or on a forward inside it; ``parse.internal``: mailgate's own code failed.
* ``limit.depth``: parts nested deeper than ``max_nesting`` were not read.
* ``limit.nested-bytes``: forwards inside forwards past ``max_nested_bytes`` re-parsed bytes
  (each level re-reads the bytes of the levels below it) were not opened.
* ``structure.unsplittable``: a multipart whose boundary is missing or never appears, with
  ``Content-*`` header lines in its body: what a lenient client might split into parts (and
  files) is only text to us. Without such lines a split could only give headerless
  ``text/plain`` parts, never a file: delivered with ``structure.multipart-without-parts``.
* ``structure.after-close``: delimiter lines opening new parts after a multipart's close
  delimiter (the stdlib puts them in the epilogue; a lenient client may show them).
* ``attachment.tnef-unreadable`` (a blob with the TNEF signature that tnefparse cannot read),
  ``limit.tnef-files`` (more files than ``max_tnef_files``), ``body.undecodable`` (a
  uuencoded body that does not decode, an x-gzip64 body inflating past its bound).

Defects that lose no part are delivered with their ``parseErrors`` as before: a missing close
delimiter (the stdlib ends the part at the parent's next delimiter or at the end of the input,
so every part is still read: ``broken_structure.eml``), damaged base64 (decoded leniently; the
attachment is still listed and sniffed: ``base64_damaged.eml``), bad charsets, bad headers, a
body cut at its size limit (``limit.text``), an unsplit multipart without part headers,
``limit.parts``
(quarantined by the scan stage as ``parse-limit``, as before).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.feedparser import BytesFeedParser
from email.message import Message
from email.policy import compat32
from typing import Any, cast

from mailgate.envelope import Address, Attachment
from mailgate.mime.addresses import parse_address_list
from mailgate.mime.attachments import BlobSink, make_attachment, type_for_filename
from mailgate.mime.bounce import parse_delivery_status
from mailgate.mime.charsets import codec_for, decode_bytes
from mailgate.mime.errors import ErrorLog
from mailgate.mime.fields import first_msg_id, parse_date
from mailgate.mime.headers import HeaderSet, RawHeader, decode_words, split_header_block
from mailgate.mime.html import html_to_text
from mailgate.mime.limits import Limits
from mailgate.mime.params import header_text, parse_structured
from mailgate.mime.text import normalize_newlines, unflow
from mailgate.mime.tnef import extract_tnef, is_tnef, looks_like_tnef
from mailgate.mime.transfer import UNDECODABLE, children, decode_body

_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_REPORT_TYPES = frozenset(
    {"message/delivery-status", "message/global-delivery-status"},
)
_BODY_TYPES = frozenset({"text/plain", "text/html"})
_FREE_AFTER = 64 * 1024
_FEED_CHUNK = 256 * 1024
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_PART_HEADER = re.compile(r"^content-[a-z-]{1,30}[ \t]*:", re.IGNORECASE | re.MULTILINE)
_STRUCTURE_FIELDS = frozenset({"content-type", "content-transfer-encoding", "content-disposition"})
_MAX_EPILOGUE_PARTS = 100
_META_SCAN = 4096
_META_CHARSET = re.compile(
    rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]{1,40})", re.I
)
# RFC 2045 section 5.1: type "/" subtype, both tokens.
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+/[a-z0-9!#$%&'*+.^_`|~-]+")


class LeafMessage(Message):
    """Message class for parsing: ``message/*`` parts stay leaves holding their exact bytes.

    The stdlib parser would otherwise parse an embedded message (and split delivery-status
    blocks), keeping no offsets, so the forward could only be re-serialized, never returned
    byte for byte. mailgate reads the embedded headers itself (``headers.py``).
    """

    def get_content_type(self) -> str:
        ctype = super().get_content_type()
        if ctype.startswith("message/"):
            return "application/x-mailgate-" + ctype[8:]
        return ctype


@dataclass
class Collected:
    """What the walk found, before the envelope is assembled."""

    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    forwarded: list[dict[str, Any]] = field(default_factory=list)
    bounce: dict[str, Any] | None = None
    is_report: bool = False


def forwarded_summary(data: bytes, limits: Limits, errors: ErrorLog) -> dict[str, Any]:
    """Subject, from, date and message id of a forwarded (message/rfc822) message."""
    fields, _ = split_header_block(data, limits, ErrorLog())
    hs = HeaderSet(fields)
    subject = hs.first("subject")
    date = hs.first("date")
    senders: list[Address] = parse_address_list(hs.all("from"), errors)
    mid = hs.first("message-id")
    return {
        "subject": decode_words(subject) if subject is not None else None,
        "from": senders[0] if senders else None,
        "date": parse_date(decode_words(date)) if date is not None else None,
        "messageId": first_msg_id(decode_words(mid)) if mid is not None else None,
    }


@dataclass
class _Inside:
    """Where a part inside a forward lands: the top-level ``.eml`` record and a path prefix."""

    contains: list[dict[str, Any]]
    path: str


@dataclass
class _Item:
    part: Message
    depth: int
    alt: int | None
    parent_type: str
    inside: _Inside | None = None


def parse_tree(
    fields: list[RawHeader], raw: bytes, body_start: int, errors: ErrorLog, what: str = "message"
) -> Message | None:
    """Parse the MIME tree from the Content-* ``fields`` + ``raw[body_start:]``, fed in slices.

    Only the Content-* fields are fed (Received & co. are not re-parsed). None, with a
    ``parse.structure`` error (unscannable), when the stdlib parser raises: it nests one
    generator per MIME level and hits the recursion limit near 1000 levels.
    """
    head = structure_head(fields)
    try:
        single = _single_part(head, raw, body_start)
    except Exception:  # judged again, with the error recorded, by the full parse below
        single = None
    if single is not None:
        return single
    parser = BytesFeedParser(_factory=LeafMessage, policy=compat32)
    view = memoryview(raw)
    try:
        parser.feed(head)
        for start in range(body_start, len(raw), _FEED_CHUNK):
            parser.feed(bytes(view[start : start + _FEED_CHUNK]))
        msg = parser.close()
    except Exception as exc:  # the stdlib parser can raise on hostile input (deep nesting...)
        errors.add(
            "parse.structure", f"MIME structure of the {what} unreadable ({type(exc).__name__})"
        )
        return None
    finally:
        view.release()
    return msg


def _single_part(head: bytes, raw: bytes, body_start: int) -> Message | None:
    """The message when it is not multipart: its headers parsed, the rest its payload.

    For a non-multipart message the stdlib parser reads the body line by line only to join the
    lines again (a quarter of a 100 KB message's parse); the payload it builds is exactly the
    body decoded as ASCII with surrogateescape, which is what this sets. None for multipart.
    """
    parser = BytesFeedParser(_factory=LeafMessage, policy=compat32)
    parser.feed(head)
    msg = parser.close()
    if msg.get_content_maintype() == "multipart":
        return None
    msg.set_payload(raw[body_start:].decode("ascii", "surrogateescape"))
    return msg


def structure_head(fields: list[RawHeader]) -> bytes:
    """The header block fed to the MIME parser: only the Content-* fields, then a blank line."""
    # Unfolded (RFC 5322 section 2.2.3): the stdlib keeps the line break inside a folded
    # parameter, so boundary="simple\r\n boundary" would never match the delimiter lines.
    return (
        b"".join(
            name.encode("ascii") + b": " + _FOLD.sub(b"", value).strip() + b"\r\n"
            for name, value in fields
            if name.lower() in _STRUCTURE_FIELDS
        )
        + b"\r\n"
    )


class Walker:
    """One walk over one parsed message; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        limits: Limits,
        errors: ErrorLog,
        blob_sink: BlobSink | None,
        message_key: str,
    ) -> None:
        self.limits = limits
        self.errors = errors
        self.blob_sink = blob_sink
        self.message_key = message_key
        self.parts = 0
        self.nested_bytes = 0
        self.out = Collected()
        self._alt_text_done: set[int] = set()
        self._stack: list[_Item] = []

    # -- entry -------------------------------------------------------------------------------

    def walk(self, root: Message) -> Collected:
        self._stack = [_Item(root, 0, None, "")]
        while self._stack:
            self._visit(self._stack.pop())
        return self.out

    # -- helpers -----------------------------------------------------------------------------

    def _content_type(self, part: Message, parent_type: str) -> tuple[str, dict[str, str]]:
        ctype, params = parse_structured(header_text(part, "content-type"))
        if _MEDIA_TYPE.fullmatch(ctype) is None:
            if ctype:
                self.errors.add("header.content-type", f"invalid Content-Type {ctype[:60]!r}")
            # RFC 2045 section 5.2 default; RFC 2046 section 5.1.5 for multipart/digest.
            ctype = "message/rfc822" if parent_type == "multipart/digest" else "text/plain"
        return ctype, params

    def _record(
        self,
        data: bytes,
        *,
        filename: str | None,
        ctype: str,
        disposition: str,
        content_id: str | None,
        inside: _Inside | None,
    ) -> Attachment:
        too_big = len(data) > self.limits.max_attachment_bytes
        if too_big:
            self.errors.add(
                "limit.attachment-size",
                f"attachment of {len(data)} bytes over {self.limits.max_attachment_bytes}; "
                "listed but not stored",
            )
        listing: list[Any] = self.out.attachments if inside is None else inside.contains
        record = make_attachment(
            data=data,
            filename=filename,
            content_type=ctype,
            disposition=disposition,
            content_id=content_id,
            index=len(listing) + 1,
            message_key=self.message_key if inside is None else f"{self.message_key}:contains",
            blob_sink=self.blob_sink,
            store=not too_big,
        )
        if inside is not None:
            entry = cast(dict[str, Any], record)
            entry["path"] = f"{inside.path}/{record['filename']}"
        listing.append(record)
        return record

    def _decode(self, part: Message) -> bytes:
        cte_text = header_text(part, "content-transfer-encoding") or ""
        cte = cte_text.strip().lower()
        data, problem = decode_body(part, cte)
        if problem:
            code = "body.undecodable" if problem in UNDECODABLE else "body.transfer-encoding"
            self.errors.add(code, problem)
        return data

    # -- the walk ----------------------------------------------------------------------------

    def _visit(self, item: _Item) -> None:
        part, depth = item.part, item.depth
        self.parts += 1
        if self.parts > self.limits.max_parts:
            if self.parts == self.limits.max_parts + 1:
                self.errors.add(
                    "limit.parts", f"more than {self.limits.max_parts} MIME parts; rest skipped"
                )
            return
        if depth > self.limits.max_depth:
            self.errors.add(
                "limit.depth", f"MIME nesting deeper than {self.limits.max_depth}; rest skipped"
            )
            return
        ctype, params = self._content_type(part, item.parent_type)
        payload = children(part)
        if payload is not None:
            self._container(item, ctype, params, payload)
            return
        if ctype.startswith("multipart/"):
            if not _holds_part_headers(part):
                self.errors.add(
                    "structure.multipart-without-parts",
                    f"{ctype} without readable parts (missing or wrong boundary); read as text",
                )
            else:
                self.errors.add(
                    "structure.unsplittable",
                    f"{ctype} with part headers but no readable parts (missing or wrong "
                    "boundary); read as text, may hide parts",
                )
            ctype = "text/plain"
        self._leaf(item, ctype, params)

    def _container(
        self, item: _Item, ctype: str, params: dict[str, str], payload: list[Message]
    ) -> None:
        part, depth, alt = item.part, item.depth, item.alt
        if not ctype.startswith("multipart/"):
            self.errors.add("structure.unexpected-children", f"{ctype} part had sub-parts")
        # A forwarded report is not this message's bounce.
        is_report = ctype == "multipart/report" and params.get("report-type") == "delivery-status"
        if is_report and item.inside is None:
            self.out.is_report = True
        group = id(part) if ctype == "multipart/alternative" else alt
        boundary = params.get("boundary")
        reused = False
        todo: list[_Item] = []
        for child in payload:
            if not (boundary and _reuses_boundary(child, boundary)):
                todo.append(_Item(child, depth + 1, group, ctype, item.inside))
            else:
                # RFC 2046 5.1.1 forbids a nested multipart reusing its parent's boundary,
                # but Outlook Express for Mac did: the stdlib then gives the inner part no
                # children and the outer one its parts. The siblings that follow are really
                # the inner part's (an alternative: one body, not two).
                reused = True
                self.errors.add(
                    "structure.reused-boundary",
                    "a nested multipart reuses its parent's boundary; parts regrouped",
                )
                inner_type = parse_structured(header_text(child, "content-type"))[0]
                if inner_type == "multipart/alternative":
                    group = id(child)
        if reused:
            # What the stdlib left in the epilogue after the inner close delimiter are the
            # outer part's remaining parts.
            for extra in _epilogue_parts(part, boundary or ""):
                todo.append(_Item(extra, depth + 1, alt, ctype, item.inside))
        elif boundary and _opens_part_after_close(part.epilogue, boundary):
            self.errors.add(
                "structure.after-close",
                f"{ctype} has parts after its close delimiter; not read, may hide parts",
            )
        self._stack.extend(reversed(todo))

    def _leaf(self, item: _Item, ctype: str, params: dict[str, str]) -> None:
        part, alt, inside = item.part, item.alt, item.inside
        disp, dparams = parse_structured(header_text(part, "content-disposition"))
        filename = dparams.get("filename") or params.get("name")
        content_id = _content_id(part)
        data = self._decode(part)
        if isinstance(part._payload, str) and len(part._payload) > _FREE_AFTER:  # type: ignore[attr-defined]
            part._payload = ""  # type: ignore[attr-defined]  # drop the encoded copy early
        if ctype in _BODY_TYPES and disp != "attachment":
            if inside is None:
                self._body(data, ctype, params, alt)
            # Inline text with an explicit Content-Disposition filename is a file the sender
            # attached (Netscape, Apple Mail): mail clients show it inline *and* list it, so
            # it is body text and an attachment. A bare Content-Type name= alone is not.
            if not dparams.get("filename"):
                return
        if ctype in _MESSAGE_TYPES:
            self._forward(item, data, ctype, filename, disp, content_id)
            return
        if ctype in _REPORT_TYPES:
            if inside is not None:
                return
            # RFC 3464 fields feed ``bounce``; the report is text a reader sees, not a file.
            report = normalize_newlines(decode_bytes(data, "utf-8")[0])
            bounce = parse_delivery_status(report)
            if bounce is not None and self.out.bounce is None:
                self.out.bounce = bounce
            if alt is None:
                self.out.texts.append(report)
            return
        if is_tnef(ctype, filename) and self._tnef(data, alt, inside):
            return
        if disp not in ("inline", "attachment"):
            # No disposition: a part referenced by Content-ID (multipart/related) is shown inline.
            disp = "inline" if content_id else "attachment"
        self._record(
            data,
            filename=filename,
            ctype=ctype,
            disposition=disp,
            content_id=content_id,
            inside=inside,
        )

    def _tnef(self, data: bytes, alt: int | None, inside: _Inside | None) -> bool:
        """Unpack a winmail.dat; True when its files (or body) replace the blob itself."""
        unpacked = extract_tnef(data, self.limits.max_tnef_files + 1)
        files, tnef_body = unpacked if unpacked is not None else ([], None)
        if len(files) > self.limits.max_tnef_files:
            self.errors.add(
                "limit.tnef-files",
                f"winmail.dat holds more than {self.limits.max_tnef_files} files; rest not read",
            )
            files = files[: self.limits.max_tnef_files]
        if tnef_body and not self.out.texts and alt is None and inside is None:
            self.out.texts.append(normalize_newlines(tnef_body))
        if files:
            for name, blob in files:
                self._record(
                    blob,
                    filename=name or None,
                    ctype=type_for_filename(name),
                    disposition="attachment",
                    content_id=None,
                    inside=inside,
                )
            return True
        if unpacked is None:
            if looks_like_tnef(data):
                self.errors.add(
                    "attachment.tnef-unreadable",
                    "winmail.dat has the TNEF signature but could not be unpacked; may hide files",
                )
            else:
                self.errors.add("attachment.tnef", "winmail.dat could not be unpacked; kept as is")
            return False
        # readable TNEF that only carried the (now extracted) body
        return bool(tnef_body)

    def _forward(
        self,
        item: _Item,
        data: bytes,
        ctype: str,
        filename: str | None,
        disp: str,
        content_id: str | None,
    ) -> None:
        """A message/rfc822 part: listed (top level) and opened for the files it holds."""
        inside = item.inside
        if inside is None:
            summary = forwarded_summary(data, self.limits, self.errors)
            self.out.forwarded.append(summary)
            if not filename and summary.get("subject"):
                filename = f"{summary['subject']}.eml"
            if disp not in ("inline", "attachment"):
                disp = "inline" if content_id else "attachment"
            record = self._record(
                data,
                filename=filename,
                ctype=ctype,
                disposition=disp,
                content_id=content_id,
                inside=None,
            )
            entry = cast(dict[str, Any], record)
            contains: list[dict[str, Any]] = []
            entry["contains"] = contains
            inside = _Inside(contains, record["filename"])
        else:
            inside = _Inside(inside.contains, f"{inside.path}/{filename or 'message.eml'}")
        self.nested_bytes += len(data)
        if self.nested_bytes > self.limits.max_nested_bytes:
            self.errors.add(
                "limit.nested-bytes",
                f"forwarded messages over {self.limits.max_nested_bytes} bytes in all; "
                "the rest not opened",
            )
            return
        if item.depth + 1 > self.limits.max_depth:
            self.errors.add(
                "limit.depth", f"MIME nesting deeper than {self.limits.max_depth}; rest skipped"
            )
            return
        fields, body_start = split_header_block(data, self.limits, ErrorLog())
        root = parse_tree(fields, data, body_start, self.errors, "forwarded message")
        if root is not None:
            self._stack.append(_Item(root, item.depth + 1, None, "", inside))

    def _body(self, data: bytes, ctype: str, params: dict[str, str], alt: int | None) -> None:
        charset = params.get("charset")
        if ctype == "text/html" and codec_for(charset) is None:
            # No usable MIME label: the document may declare one (HTML5 8.2.2.2 prescan).
            meta = _META_CHARSET.search(data[:_META_SCAN])
            if meta is not None:
                charset = meta.group(1).decode("ascii")
        text, clean = decode_bytes(data, charset)
        if text.startswith("\ufeff"):
            text = text[1:]
        if not clean:
            self.errors.add(
                "charset.fallback",
                f"{ctype} body did not decode as {params.get('charset') or 'declared'}; fell back",
            )
        text = normalize_newlines(text)
        if ctype == "text/plain":
            if alt is not None:
                if alt in self._alt_text_done:
                    return
                self._alt_text_done.add(alt)
            if params.get("format", "").lower() == "flowed":
                text = unflow(text, params.get("delsp", "").lower() == "yes")
            self.out.texts.append(text)
        else:
            if alt is not None and self.out.htmls and self._last_html_alt == alt:
                self.out.htmls[-1] = text
            else:
                self.out.htmls.append(text)
            self._last_html_alt = alt
            if alt is None:
                # An HTML part with no plain alternative is what the reader sees: its text
                # belongs in ``text`` at this position (e.g. mixed plain + HTML parts).
                self.out.texts.append(html_to_text(text))

    _last_html_alt: int | None = None


def _content_id(part: Message) -> str | None:
    value = header_text(part, "content-id")
    if not value:
        return None
    value = value.strip()
    if value.startswith("<") and ">" in value:
        value = value[1 : value.index(">")]
    return value.strip() or None


def _holds_part_headers(part: Message) -> bool:
    """Whether an unsplit multipart body has MIME header lines (a part a lenient client could
    split out as a file). Without any, a split could only give headerless text/plain parts."""
    payload = part._payload  # type: ignore[attr-defined]  # str: BytesFeedParser decodes
    return isinstance(payload, str) and _PART_HEADER.search(payload) is not None


def _opens_part_after_close(epilogue: str | None, boundary: str) -> bool:
    """A delimiter line opening a part (not a repeated close) in the text after the close."""
    if not epilogue or f"--{boundary}" not in epilogue:
        return False
    opener = re.compile(rf"^--{re.escape(boundary)}[ \t]*\r?$", re.MULTILINE)
    return opener.search(epilogue) is not None


def _reuses_boundary(child: Message, boundary: str) -> bool:
    ctype, params = parse_structured(header_text(child, "content-type"))
    if not ctype.startswith("multipart/") or params.get("boundary") != boundary:
        return False
    return not children(child)


def _epilogue_parts(part: Message, boundary: str) -> list[Message]:
    """Parts found after the close delimiter, split on the same boundary (bounded)."""
    epilogue = part.epilogue
    if not epilogue or not boundary or f"--{boundary}" not in epilogue:
        return []
    delimiter = re.compile(rf"^--{re.escape(boundary)}(--)?[ \t]*\r?$", re.MULTILINE)
    pieces: list[Message] = []
    starts = list(delimiter.finditer(epilogue))
    for here, nxt in zip(starts, [*starts[1:], None], strict=True):
        if here.group(1):  # a close delimiter ends the part list
            break
        chunk = epilogue[here.end() : nxt.start() if nxt is not None else len(epilogue)]
        chunk = chunk.removeprefix("\n")
        # The line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1).
        chunk = chunk.removesuffix("\n").removesuffix("\r")
        parser = BytesFeedParser(_factory=LeafMessage, policy=compat32)
        parser.feed(chunk.encode("ascii", "surrogateescape"))
        pieces.append(parser.close())
        if len(pieces) >= _MAX_EPILOGUE_PARTS:
            break
    return pieces
