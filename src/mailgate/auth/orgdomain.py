"""Organizational domains and identifier alignment (RFC 7489 sections 3.2 and 3.1).

Owns: the Public Suffix List lookup (publicsuffixlist, loaded once per process) that turns
``mail.example.co.uk`` into its organizational domain ``example.co.uk``, and the relaxed/strict
alignment test DMARC and the DKIM result's "aligned signature" preference both use.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

_PSL: PublicSuffixList | None = None
_LOCK = threading.Lock()


def _psl() -> PublicSuffixList:
    global _PSL
    if _PSL is None:
        with _LOCK:
            if _PSL is None:
                _PSL = PublicSuffixList()
    return _PSL


def normalize_domain(domain: str | bytes | None) -> str:
    if domain is None:
        return ""
    if isinstance(domain, bytes):
        domain = domain.decode("ascii", "replace")
    domain = domain.strip().rstrip(".").lower()
    try:
        # Compare in A-label form so U-labels and punycode align (RFC 7489 section 3.2).
        return domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return domain


@lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 section 3.2): public suffix plus one label.

    A domain that is itself a public suffix (or has no dot) is its own organizational domain.
    """
    d = normalize_domain(domain)
    if not d:
        return d
    private = _psl().privatesuffix(d)
    return str(private) if private else d


def aligned(a: str | None, b: str | None, mode: str = "r") -> bool:
    """Identifier alignment: strict ``s`` needs equal names, relaxed ``r`` equal org domains."""
    x, y = normalize_domain(a), normalize_domain(b)
    if not x or not y:
        return False
    if x == y:
        return True
    if mode == "s":
        return False
    return org_domain(x) == org_domain(y)
