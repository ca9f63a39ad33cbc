"""Address lists (From, To, Cc, Reply-To, ...) to ``[{"email", "name"}]``, keeping what is readable.

A small RFC 5322 section 3.4 tokenizer rather than ``email.headerregistry``, on purpose:

* ``support@yourco.com <evil@x.test>``: the address is the angle-addr, never the display-name
  text (the stdlib registry returns the display-name text, a spoofing aid).
* ``bbb@ddd.com (John X. Doe)``: the comment becomes the name (RFC 822 style, which is how
  people still write it).
* Groups (``Team: a@x, b@y;``) are flattened; ``undisclosed-recipients:;`` gives nothing.
* Encoded words in names are decoded after tokenizing, so a decoded comma cannot split a name.
* Raw UTF-8 (SMTPUTF8, RFC 6532) local parts and names are kept as text.
* Malformed lists (missing ``>``, unbalanced quotes, stray commas) yield every mailbox that can
  be read; a bare local part (``To: noone``) is kept as written.
"""

from __future__ import annotations

import re

from mailgate.envelope import Address
from mailgate.mime.errors import ErrorLog
from mailgate.mime.headers import decode_words, raw_text

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<qs>"(?:[^"\\]|\\.)*(?:"|$))
  | (?P<angle><[^<>]*>|<[^<>,]*)
  | (?P<special>[,:;])
  | (?P<atom>[^\s"(),:;<>]+|[<>])
    """,
    re.VERBOSE | re.DOTALL,
)
_BACKSLASH = re.compile(r"\\(.)", re.DOTALL)
_SPACES = re.compile(r"\s+")
_ROUTE = re.compile(r"^(?:@[^:]*:)+")
_MAX_COMMENT_DEPTH = 50

Token = tuple[str, str]


def _comment(text: str, start: int) -> tuple[str, int]:
    """Read a (possibly nested) comment starting at ``text[start] == '('``; return (inner, end)."""
    depth = 0
    i = start
    n = len(text)
    out: list[str] = []
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
            continue
        if c == "(":
            depth += 1
            if depth > 1 and depth <= _MAX_COMMENT_DEPTH:
                out.append(c)
        elif c == ")":
            depth -= 1
            if depth == 0:
                return "".join(out), i + 1
            out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out), n


def tokenize(text: str) -> list[Token]:
    """Split an unfolded address header into (kind, text) tokens; comments are kind 'comment'."""
    tokens: list[Token] = []
    pos = 0
    n = len(text)
    quotes_open = True  # after one unterminated quote no later '"' can close: skip the scan
    while pos < n:
        if text[pos] == '"' and not quotes_open:
            tokens.append(("atom", '"'))
            pos += 1
            continue
        if text[pos] == "(":
            inner, pos = _comment(text, pos)
            tokens.append(("comment", inner))
            continue
        if text[pos] == ")":
            pos += 1
            continue
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the atom branch matches any other character
            pos += 1
            continue
        kind = m.lastgroup or "atom"
        if kind == "qs" and (len(m.group()) < 2 or not m.group().endswith('"')):
            # An unterminated quote would swallow the rest of the list: read it as text.
            quotes_open = False
            pos += 1
            continue
        if kind != "ws":
            tokens.append((kind, m.group()))
        else:
            tokens.append(("ws", " "))
        pos = m.end()
    return tokens


def _unquote(qs: str) -> str:
    inner = qs[1:-1] if len(qs) >= 2 and qs.endswith('"') else qs[1:]
    return _BACKSLASH.sub(r"\1", inner)


def _clean_name(name: str) -> str:
    name = _SPACES.sub(" ", name).strip()
    if "=?" in name:
        name = decode_words(name.encode("utf-8"))
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
        name = name[1:-1].strip()
    return name


def _clean_email(email: str) -> str:
    email = _SPACES.sub("", email)
    if email[:7].lower() == "mailto:":
        email = email[7:]
    return _ROUTE.sub("", email)


def _mailbox(tokens: list[Token], errors: ErrorLog | None) -> Address | None:
    words = [t for t in tokens if t[0] != "ws"]
    if not words:
        return None
    comments = " ".join(t[1] for t in words if t[0] == "comment")
    angle_idx = max((i for i, t in enumerate(tokens) if t[0] == "angle"), default=-1)
    if angle_idx >= 0:
        inner = tokens[angle_idx][1][1:]
        if inner.endswith(">"):
            inner = inner[:-1]
        email = _clean_email(inner)
        name_parts: list[str] = []
        for kind, value in tokens[:angle_idx]:
            if kind == "qs":
                name_parts.append(_unquote(value))
            elif kind in ("atom", "ws", "special"):
                name_parts.append(value)
        name = _clean_name("".join(name_parts)) or _clean_name(comments)
        if not email:
            return None
        return {"email": email, "name": name}
    plain = [t for t in words if t[0] != "comment"]
    if not plain:
        return None
    # Text before an unbracketed address ("Joe Bloggs joe@x.test"): the last word with an @
    # is the address, what precedes it the name.
    at_idx = max((i for i, t in enumerate(plain) if "@" in t[1]), default=-1)
    if at_idx >= 0:
        # addr-spec may be split by white space or quoted local parts: "john doe"@x, a . b@c
        start = at_idx
        while start > 0 and (
            plain[start - 1][1].endswith(".")
            or plain[start][1].startswith((".", "@"))
            or (plain[start - 1][0] == "qs" and plain[start][1].startswith("@"))
        ):
            start -= 1
        email = _clean_email("".join(v for _, v in plain[start:]))
        name_parts = [_unquote(v) if k == "qs" else v for k, v in plain[:start]]
        name = _clean_name(" ".join(name_parts)) or _clean_name(comments)
        return {"email": email, "name": name}
    atoms = [v for k, v in plain if k == "atom"]
    if len(plain) == 1 and atoms:
        # A bare local part ("To: noone"): kept as written, RFC 822 allowed it for local mail.
        return {"email": _clean_email(atoms[0]), "name": _clean_name(comments)}
    if errors is not None:
        errors.add("header.address", "an address list entry without an address was skipped")
    return None


def parse_address_list(
    values: list[bytes], errors: ErrorLog | None = None, limit: int = 1000
) -> list[Address]:
    """Every mailbox in one or more raw header values (repeated To/Cc headers are merged)."""
    out: list[Address] = []
    for value in values:
        text = raw_text(value)
        if not text:
            continue
        current: list[Token] = []
        in_group = False
        for tok in tokenize(text):
            kind, val = tok
            if kind == "special":
                if val == ",":
                    box = _mailbox(current, errors)
                    if box is not None:
                        out.append(box)
                    current = []
                    continue
                # A group's display name ends at ':' (RFC 5322 section 3.4); it is not kept.
                if (
                    val == ":"
                    and not in_group
                    and not any(t[0] == "angle" for t in current)
                    and not any("@" in t[1] for t in current if t[0] == "atom")
                ):
                    in_group = True
                    current = []
                    continue
                if val == ";" and in_group:
                    box = _mailbox(current, errors)
                    if box is not None:
                        out.append(box)
                    current = []
                    in_group = False
                    continue
            current.append(tok)
        box = _mailbox(current, errors)
        if box is not None:
            out.append(box)
        if len(out) >= limit:
            if errors is not None:
                errors.add("limit.addresses", f"address list cut at {limit} entries")
            return out[:limit]
    return out
