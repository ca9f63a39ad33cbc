"""Which return paths an acknowledgement may go to: one plain ``local@domain``, nothing else.

The return path (``MAIL FROM``) is chosen by whoever connects to us, and the smarthost obeys
it. RFC 5321 allows forms that make a mail server do things no acknowledgement should cause:
``user%victim@relay`` (the %-hack: the relay forwards to ``victim``), ``host!user`` (UUCP bang
paths), ``@a,@b:user@c`` (source routes, RFC 5321 appendix C), ``user@[10.0.0.1]`` (an IP
literal: the smarthost connects to an address of the attacker's choosing, internal ones
included), quoted local parts that hide any of these, and a bare dotted IP as the domain.

`return_path_problem` accepts only a conservative subset and names the first problem found
with a stable token (recorded in the envelope's ``reply.detail``):

- local part: letters and digits (any script: an SMTPUTF8 return path is allowed and sent
  only through a smarthost that advertises SMTPUTF8), and ``. _ + = - '``; dots neither
  first, last nor doubled; at most 64 octets;
- domain: a DNS name of at least two labels, each of letters, digits and inner hyphens (U-labels
  must convert to valid A-labels), at most 63 octets a label, a top-level label that is not
  all digits;
- the whole path at most 254 octets (RFC 5321 4.5.3.1.3, without the brackets; this also keeps
  the domain under its 253), no whitespace or control characters.
"""

from __future__ import annotations

import unicodedata

MAX_PATH = 254
MAX_LOCAL = 64
MAX_LABEL = 63
_LOCAL_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+=-'")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")

PROBLEMS = {
    "control-characters": "whitespace or control characters",
    "too-long": "longer than RFC 5321 allows",
    "source-route": "a source route (@a,@b:user@c)",
    "quoted-local-part": "a quoted local part",
    "no-domain": "no @domain",
    "multiple-at": "more than one @",
    "ip-literal": "an IP address literal as the domain",
    "percent-hack": "a %-hack (user%host@relay)",
    "bang-path": "a UUCP bang path (host!user)",
    "bad-local-part": "a local part with unusual characters or dots",
    "bad-domain": "a domain that is not a DNS name",
    "ip-address": "a bare IP address as the domain",
}


def return_path_problem(path: str) -> str | None:
    """None for a plain return path we may answer; otherwise a token of `PROBLEMS`."""
    if '"' in path or "\\" in path:
        return "quoted-local-part"
    if any(_is_control_or_space(c) for c in path):
        return "control-characters"
    if len(path.encode("utf-8")) > MAX_PATH:
        return "too-long"
    if path.startswith("@") or ":" in path or "," in path:
        return "source-route"
    if "@" not in path:
        return "no-domain"
    if path.count("@") > 1:
        return "multiple-at"
    local, _, domain = path.partition("@")
    if domain.startswith("["):
        return "ip-literal"
    if "%" in local:
        return "percent-hack"
    if "!" in local:
        return "bang-path"
    if not _plain_local(local):
        return "bad-local-part"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_dns_label(label) for label in labels):
        return "bad-domain"
    if labels[-1].isdigit():
        return "ip-address"
    return None


def describe(problem: str) -> str:
    """``token: explanation`` for ``env.reply.detail``."""
    return f"{problem}: return path is {PROBLEMS.get(problem, problem)}"


def _is_control_or_space(c: str) -> bool:
    return unicodedata.category(c)[0] in "CZ"


def _plain_local(local: str) -> bool:
    if not local or len(local.encode("utf-8")) > MAX_LOCAL:
        return False
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    return all(c in _LOCAL_ASCII or (ord(c) > 127 and c.isalnum()) for c in local)


def _dns_label(label: str) -> bool:
    if label.isascii():
        ascii_label = label.lower()
    else:
        if not all(c.isalnum() or c == "-" for c in label):
            return False
        try:
            ascii_label = label.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return False
    if not ascii_label or len(ascii_label) > MAX_LABEL:
        return False
    if ascii_label.startswith("-") or ascii_label.endswith("-"):
        return False
    return all(c in _LDH for c in ascii_label)
