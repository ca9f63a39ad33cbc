"""Entities: named patterns (order numbers, PO numbers, invoices, tickets, cards) found in mail.

Defaults cover what support mail carries most: ``orderId`` (``order #123456``), ``poNumber``
(``PO-12345``), ``invoiceId`` (``invoice #4721``, ``Invoice INV-2024-001``), ``ticketId``
(``T-1042``, with the configured ticket prefix) and ``cardNumber`` (13-19 digits passing the
Luhn check, masked). ``[[pipeline.entities]]`` adds patterns or replaces a default of the same
name (an empty ``pattern`` switches a default off).

A pattern's value is its ``value`` named group, else its first group, else the whole match.
Entities with ``mask = true`` are masked wherever found (subject, text, replyText, html), and
their values are stored masked: a card number never reaches the envelope, a webhook or a log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mailgate.config import ConfigError, EntityConfig, PipelineConfig
from mailgate.envelope import Envelope

TEXT_FIELDS = ("subject", "text", "replyText", "html")
"""Envelope fields an entity may be extracted from (``fields = [...]``)."""

MASKED_FIELDS = ("subject", "text", "replyText", "html")


def luhn_valid(digits: str) -> bool:
    """ISO/IEC 7812 check digit (the Luhn algorithm) over a string of digits, 13-19 long."""
    if not 13 <= len(digits) <= 19 or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _luhn(value: str) -> bool:
    return luhn_valid(re.sub(r"[ -]", "", value))


VALIDATORS: dict[str, Callable[[str], bool]] = {"luhn": _luhn}


def mask_digits(value: str, keep: int = 4) -> str:
    """``4111 1111 1111 1111`` -> ``**** **** **** 1111`` (separators kept)."""
    total = sum(c.isdigit() for c in value)
    out = []
    seen = 0
    for c in value:
        if c.isdigit():
            seen += 1
            out.append(c if seen > total - keep else "*")
        else:
            out.append(c)
    return "".join(out)


@dataclass(frozen=True)
class EntityPattern:
    name: str
    regex: re.Pattern[str]
    validator: Callable[[str], bool] | None = None
    mask: bool = False
    fields: tuple[str, ...] = ("subject", "text")

    def values(self, text: str) -> list[str]:
        out = []
        for m in self.regex.finditer(text):
            value = _value_of(m)
            if not value or (self.validator is not None and not self.validator(value)):
                continue
            out.append(mask_digits(value) if self.mask else value)
        return out


def _value_of(m: re.Match[str]) -> str:
    if "value" in m.re.groupindex:
        return m.group("value") or ""
    if m.re.groups:
        return m.group(1) or ""
    return m.group(0)


_ORDER = (
    r"(?i)\b(?:order|bestellung|commande|pedido)\s*(?:number|num\.?|no\.?|nr\.?|id|#)?\s*[:.]?\s*"
    r"#?\s*(?P<value>\d{4,12})\b"
)
_PO = r"\b(?P<value>PO[- ]?\d{3,10})\b"
_INVOICE = (
    r"(?i)\b(?:invoice|rechnung|facture)\s*(?:number|num\.?|no\.?|nr\.?|id|#)?\s*[:.]?\s*#?\s*"
    r"(?P<value>(?:[a-z]{2,5}-)?\d[\d-]{1,14}\d)\b"
)
_CARD = r"(?<![\d-])(?P<value>\d(?:[ -]?\d){12,18})(?![\d])"


def default_entities(ticket_prefix: str) -> list[EntityConfig]:
    ticket = rf"(?<![A-Za-z0-9])(?P<value>{re.escape(ticket_prefix)}\d{{1,10}})\b"
    return [
        EntityConfig(name="orderId", pattern=_ORDER),
        EntityConfig(name="poNumber", pattern=_PO),
        EntityConfig(name="invoiceId", pattern=_INVOICE),
        EntityConfig(name="ticketId", pattern=ticket),
        EntityConfig(
            name="cardNumber",
            pattern=_CARD,
            validator="luhn",
            mask=True,
            fields=["subject", "text", "replyText", "html"],
        ),
    ]


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A plain Python regex, or the rules' ``/regex/flags`` form."""
    from mailgate.pipeline.rules import parse_regex_literal

    literal = parse_regex_literal(pattern)
    if literal is not None:
        return literal
    return re.compile(pattern)


def build_entities(
    cfg: PipelineConfig, where: Callable[[str], str] | None = None
) -> list[EntityPattern]:
    """Defaults merged with ``[[pipeline.entities]]``; raises `ConfigError` on a bad entry."""
    merged: dict[str, tuple[str, EntityConfig]] = {
        e.name: ("", e) for e in default_entities(cfg.ticket_prefix)
    }
    for i, e in enumerate(cfg.entities):
        merged[e.name] = (f"pipeline.entities[{i}]", e)
    out = []
    for name, (keypath, e) in merged.items():
        loc = (where(keypath) + ": ") if (where and keypath) else ""
        if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(
                f"{loc}{keypath}.name = {name!r}: expected an identifier like orderId"
            )
        if not e.pattern:
            continue
        try:
            regex = compile_pattern(e.pattern)
        except (re.error, ValueError) as exc:
            raise ConfigError(
                f"{loc}{keypath}.pattern = {e.pattern!r}: expected a valid regex ({exc})"
            ) from None
        for f in e.fields:
            if f not in TEXT_FIELDS:
                raise ConfigError(
                    f"{loc}{keypath}.fields = {f!r}: expected one of {', '.join(TEXT_FIELDS)}"
                )
        validator = VALIDATORS[e.validator] if e.validator else None
        out.append(EntityPattern(name, regex, validator, e.mask, tuple(e.fields)))
    return out


def extract(env: Envelope, patterns: Iterable[EntityPattern]) -> dict[str, list[str]]:
    """Every entity found in its fields, values in order of appearance, without repeats."""
    found: dict[str, list[str]] = {}
    for p in patterns:
        values: list[str] = []
        for f in p.fields:
            text = env.get(f)
            if isinstance(text, str) and text:
                for v in p.values(text):
                    if v not in values:
                        values.append(v)
        if values:
            found[p.name] = values
    return found


def mask(env: Envelope, patterns: Iterable[EntityPattern]) -> int:
    """Mask the values of masking entities in the envelope's text fields; returns how many."""
    count = 0
    for p in patterns:
        if not p.mask:
            continue

        def repl(m: re.Match[str], p: EntityPattern = p) -> str:
            nonlocal count
            value = _value_of(m)
            if not value or (p.validator is not None and not p.validator(value)):
                return m.group(0)
            count += 1
            group: str | int = "value" if "value" in m.re.groupindex else (1 if m.re.groups else 0)
            start = m.start(group) - m.start()
            whole = m.group(0)
            return whole[:start] + mask_digits(value) + whole[start + len(value) :]

        for f in MASKED_FIELDS:
            text = env.get(f)
            if isinstance(text, str) and text:
                env[f] = p.regex.sub(repl, text)
    return count
