"""Authentication-Results (RFC 8601): building ours with authres, filtering forged ones.

Owns: the header *value* mailgate adds (``authserv-id; spf=...; dkim=...; dmarc=...; arc=...``)
and the header-view filter that drops incoming Authentication-Results claiming our authserv-id
(RFC 8601 section 5: an MTA MUST remove such fields, they are forgeries) while keeping others.
"""

from __future__ import annotations

import re
from typing import Any

import authres
import authres.arc
import authres.dmarc
from authres.core import AuthenticationResultProperty

from mailgate.envelope import AuthResult

HEADER_NAME = "Authentication-Results"
_CONTEXT = authres.FeatureContext(authres.arc, authres.dmarc)
_COMMENT_UNSAFE = re.compile(r"[()\\\x00-\x1f\x7f-\uffff]")


def _comment(text: str) -> str | None:
    """A reason as an RFC 5322 comment: no parentheses, backslashes or control/8-bit chars."""
    cleaned = _COMMENT_UNSAFE.sub("", text).strip()
    return cleaned[:200] or None


def _mailfrom_property(spf: AuthResult) -> str | None:
    mail_from = spf.extra.get("mailFrom")
    return str(mail_from) if mail_from else None


def build_authentication_results(
    authserv_id: str,
    spf: AuthResult,
    dkim: AuthResult,
    dmarc: AuthResult,
    arc: AuthResult,
) -> str:
    """The RFC 8601 header value for our verdicts."""
    results: list[Any] = []
    if spf.extra.get("identity") == "helo":
        results.append(
            authres.SPFAuthenticationResult(
                result=spf.result,
                result_comment=_comment(spf.reason),
                smtp_helo=str(spf.extra.get("helo") or spf.domain or "") or None,
            )
        )
    else:
        results.append(
            authres.SPFAuthenticationResult(
                result=spf.result,
                result_comment=_comment(spf.reason),
                smtp_mailfrom=_mailfrom_property(spf),
            )
        )
    signatures = dkim.extra.get("signatures") or []
    if signatures:
        for sig in signatures:
            props = []
            if sig.get("b"):
                props.append(AuthenticationResultProperty("header", "b", sig["b"]))
            results.append(
                authres.DKIMAuthenticationResult(
                    result=str(sig.get("result", "permerror")),
                    result_comment=_comment(str(sig.get("reason", ""))),
                    header_d=sig.get("domain") or None,
                    header_s=sig.get("selector") or None,
                    header_a=sig.get("algorithm") or None,
                    properties=props,
                )
            )
    else:
        results.append(
            authres.DKIMAuthenticationResult(
                result=dkim.result, result_comment=_comment(dkim.reason)
            )
        )
    if arc.result != "none" or arc.extra.get("chain"):
        results.append(
            authres.arc.ARCAuthenticationResult(
                result=arc.result,
                result_comment=_comment(arc.reason),
                header_as_d=arc.domain or None,
            )
        )
    else:
        results.append(authres.arc.ARCAuthenticationResult(result=arc.result))
    policy = dmarc.extra.get("policy")
    dmarc_comment = None
    if policy:
        parts = [f"p={str(dmarc.extra.get('p', policy)).upper()}"]
        if dmarc.extra.get("sp"):
            parts.append(f"sp={str(dmarc.extra['sp']).upper()}")
        parts.append(f"dis={str(dmarc.extra.get('disposition', 'none')).upper()}")
        dmarc_comment = " ".join(parts)
    elif dmarc.reason:
        dmarc_comment = _comment(dmarc.reason)
    results.append(
        authres.dmarc.DMARCAuthenticationResult(
            result=dmarc.result,
            result_comment=dmarc_comment,
            header_from=dmarc.domain or None,
        )
    )
    header = _CONTEXT.header(authserv_id=authserv_id.lower(), results=results)
    return str(header.header_value())


_CFWS_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")


def authserv_id_of(value: str) -> str:
    """The authserv-id an Authentication-Results value claims (lower-cased; "" if none)."""
    text = value.replace("\r", " ").replace("\n", " ")
    for _ in range(5):  # strip (possibly nested) comments, bounded
        stripped = _CFWS_COMMENT.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    m = re.match(r'\s*("(?:[^"\\]|\\.)*"|[^\s;]+)', text)
    if not m:
        return ""
    token = m.group(1).strip('"')
    return token.lower().rstrip(".")


def filter_headers(
    headers: dict[str, Any], authserv_id: str, authentication_results: str
) -> dict[str, Any]:
    """The header view with our Authentication-Results first and forged ones removed.

    ``headers`` maps a name to a str, or a list of str for a repeated field. Names are matched
    case-insensitively; the existing spelling of the name is kept (``Authentication-Results``
    when the message had none). Returns a new dict with ours as the first key.
    """
    ours = authserv_id.lower().rstrip(".")
    key = HEADER_NAME
    kept: list[str] = []
    rest: dict[str, Any] = {}
    for name, value in headers.items():
        if name.lower() != HEADER_NAME.lower():
            rest[name] = value
            continue
        key = name
        values = value if isinstance(value, list) else [value]
        kept.extend(str(v) for v in values if authserv_id_of(str(v)) != ours)
    if key == HEADER_NAME and headers and all(k == k.lower() for k in headers):
        key = HEADER_NAME.lower()
    combined = [authentication_results, *kept]
    out: dict[str, Any] = {key: combined if len(combined) > 1 else authentication_results}
    out.update(rest)
    return out
