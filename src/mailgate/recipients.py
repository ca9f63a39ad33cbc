"""Which recipients are ours: local domains and mailboxes, and the tenant of each.

Recipients are accepted only for configured domains (exact, or ``*.parent`` wildcards whose
first label is one of the entry's ``tenants``), and only for listed mailboxes unless the domain is catch-all.
Anything else is refused: 550 5.1.1 for an unknown mailbox of ours, 554 5.7.1 for a foreign
domain — mailgate is never an open relay. ``postmaster@`` of every domain is always accepted
(RFC 5321 4.5.1).

Below the SMTP listener, the pipeline and the auto-reply area, which all ask it (the
listener at RCPT, the reply stage for its own domains, offline replays for the tenant).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.config import DomainConfig, domain_to_ascii

ALWAYS_ACCEPTED = ("postmaster", "abuse")


def _ascii_domain(domain: str) -> str:
    try:
        return domain_to_ascii(domain)
    except ValueError:
        return domain.lower()  # not a valid IDN: matches no configured domain


@dataclass(frozen=True)
class Accepted:
    address: str
    mailbox: str
    tag: str | None
    domain: str
    tenant: str


@dataclass(frozen=True)
class Refused:
    reason: str  # "unknown-mailbox" | "relay-denied" | "syntax"


def split_address(address: str) -> tuple[str, str] | None:
    """``local@domain`` -> (local, domain in lowercase A-labels); None when not an address.

    An SMTPUTF8 RCPT may spell an IDN in U-labels: ``support@bücher.example`` and
    ``support@xn--bcher-kva.example`` name the same domain (the config holds A-labels).
    """
    if address.count("@") < 1:
        return None
    local, _, domain = address.rpartition("@")
    domain = _ascii_domain(domain.strip().rstrip("."))
    if domain.startswith("[") or not local or not domain:
        return None
    return local, domain


@dataclass(frozen=True)
class _Wildcard:
    suffix: str  # ".support.example.com"
    config: DomainConfig
    labels: frozenset[str] | None  # the labels that are tenants; None: open_tenants
    reserved: frozenset[str]  # tenants other entries define: never reachable through a label


class RecipientPolicy:
    """Maps a recipient to its domain entry and tenant, or refuses it.

    A wildcard's label is a tenant only when the entry lists it (``tenants = [...]``) or opts
    into ``open_tenants``; even then a label never reaches a tenant that another entry
    defines (its ``tenant``, another wildcard's listed labels, or ``default``), so an
    outsider can neither mint tenants nor write into another domain's data. A wildcard with
    one ``tenant`` maps every label to it.
    """

    def __init__(self, domains: list[DomainConfig]) -> None:
        self._exact: dict[str, DomainConfig] = {}
        wild: list[DomainConfig] = []
        defined = {"default"}
        for d in domains:
            name = d.name.lower().rstrip(".")
            if name.startswith("*."):
                wild.append(d)
                if d.tenant:
                    defined.add(d.tenant.lower())
            else:
                self._exact[name] = d
                defined.add((d.tenant or "default").lower())
        listed = {id(d): frozenset(t.lower() for t in d.tenants) for d in wild}
        self._wild: list[_Wildcard] = []
        for d in wild:
            others = set(defined)
            for other in wild:
                if other is not d:
                    others |= listed[id(other)]
            labels = None if d.open_tenants and not d.tenant else listed[id(d)]
            suffix = d.name.lower().rstrip(".")[1:]
            self._wild.append(_Wildcard(suffix, d, labels, frozenset(others)))

    def is_local_domain(self, domain: str) -> bool:
        return self._match(domain.lower().rstrip("."))[0] is not None

    def _match(self, domain: str) -> tuple[DomainConfig | None, str]:
        """(entry, tenant) of a domain; tenant "" when the domain is ours but no tenant's."""
        d = self._exact.get(domain)
        if d is not None:
            return d, d.tenant or "default"
        for w in self._wild:
            if not domain.endswith(w.suffix):
                continue
            label = domain[: -len(w.suffix)]
            if not label or "." in label:
                continue
            if w.config.tenant:
                return w.config, w.config.tenant
            if label in w.reserved:
                return w.config, ""  # another entry's tenant: never through a label
            if w.labels is None or label in w.labels:
                return w.config, label
            return w.config, ""
        return None, ""

    def check(self, address: str) -> Accepted | Refused:
        if address.strip().lower() == "postmaster":
            # RFC 5321 4.5.1: "RCPT TO:<Postmaster>" without a domain must be accepted.
            d = next(iter(self._exact.values()), None)
            domain = d.name.lower() if d is not None else "localhost"
            return Accepted(
                address="postmaster",
                mailbox="postmaster",
                tag=None,
                domain=domain,
                tenant=(d.tenant if d is not None else "") or "default",
            )
        parts = split_address(address)
        if parts is None:
            return Refused("syntax")
        local, domain = parts
        dc, tenant = self._match(domain)
        if dc is None:
            return Refused("relay-denied")
        if not tenant:
            # The domain is ours (so not "relay denied"), but the label names no tenant.
            return Refused("unknown-mailbox")
        mailbox, plus, tag = local.partition("+")
        mailbox_key = mailbox.lower()
        allowed = dc.catch_all or mailbox_key in {m.lower() for m in dc.mailboxes}
        if not allowed and mailbox_key not in ALWAYS_ACCEPTED:
            return Refused("unknown-mailbox")
        return Accepted(
            address=f"{local}@{domain}",
            mailbox=mailbox_key,
            tag=tag if plus else None,
            domain=domain,
            tenant=tenant,
        )
