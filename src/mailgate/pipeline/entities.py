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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from mailgate.config import ConfigError, EntityConfig, PipelineConfig
from mailgate.envelope import Envelope
from mailgate.pipeline.card_context import companion_spans
from mailgate.pipeline.fastre import CiPattern, split_inline_flags

TEXT_FIELDS = ("subject", "text", "replyText", "html")
"""Envelope fields an entity may be extracted from (``fields = [...]``)."""

MASKED_FIELDS = ("subject", "text", "replyText", "html")
SCAN_LIMIT = 256 * 1024
"""Entities are extracted from the first 256 Ki characters of a field (as rules match);
masking, a privacy promise, always covers the whole field."""
MAX_VALUES = 100
"""Distinct values kept per entity: a support message names a handful; a body that repeats
thousands of numbers would otherwise make the envelope (and the scan) grow with them. Masking
is not capped: every card number in the text is masked."""


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


_DIGITS = re.compile(r"[0-9]+")


def luhn_spans(value: str) -> list[tuple[int, int]]:
    """Card numbers inside a run of digit groups, as (start, end) spans of ``value``.

    A run like ``4111 1111 1111 1111 2024`` holds a card number followed by something else;
    groups joined by one space or dash are tried as windows of 13-19 digits (longest first,
    left to right, not overlapping) and kept when the Luhn check passes.
    """
    groups = [(m.start(), m.end()) for m in _DIGITS.finditer(value)]
    chains: list[list[tuple[int, int]]] = []
    for g in groups:
        if chains and g[0] - chains[-1][-1][1] == 1:
            chains[-1].append(g)
        else:
            chains.append([g])
    spans: list[tuple[int, int]] = []
    for chain in chains:
        i = 0
        while i < len(chain):
            # windows chain[i..j] of 13-19 digits; the longest Luhn-valid one wins
            found = None
            digits = ""
            for j in range(i, len(chain)):
                a, b = chain[j]
                digits += value[a:b]
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_valid(digits):
                    found = j
            if found is None:
                i += 1
                continue
            spans.append((chain[i][0], chain[found][1]))
            i = found + 1
    return spans


VALIDATORS: dict[str, Callable[[str], list[tuple[int, int]]]] = {"luhn": luhn_spans}
"""name -> function giving the valid spans of a matched value (empty: not valid)."""


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


_RUN_TABLE = bytes(0x30 if chr(i) in "0123456789 -" else 0x31 for i in range(256))
_RUN = b"0" * 13


def digit_runs(text: str) -> list[tuple[int, int]] | None:
    """Maximal runs of 13 or more ``[0-9 -]`` characters of an ASCII ``text``, as (start, end);
    None for other text (its byte offsets are not character offsets).

    Every match of the card pattern ``_CARD`` lies inside such a run, and a run decides its
    matches alone, so the regex runs on the runs only. The runs come from C-speed byte
    operations (translate, then a 13-byte search that mostly skips 13 bytes a step): ~0.5 µs
    per KB, where the regex tries every digit of the body (~4 µs per KB).
    """
    if not text.isascii():
        return None
    mapped = text.encode("ascii").translate(_RUN_TABLE)
    runs = []
    at = mapped.find(_RUN)
    while at >= 0:
        end = mapped.find(b"1", at)
        end = len(mapped) if end < 0 else end
        runs.append((at, end))
        at = mapped.find(_RUN, end)
    return runs


@dataclass(frozen=True)
class EntityPattern:
    name: str
    regex: CiPattern
    validator: Callable[[str], list[tuple[int, int]]] | None = None
    mask: bool = False
    fields: tuple[str, ...] = ("subject", "text")

    def _matches(self, text: str, lowered: str | None) -> Iterator[re.Match[str]]:
        if self.regex.original.pattern == _CARD and self.regex.original.flags == re.UNICODE:
            runs = digit_runs(text)
            if runs is not None:
                for a, b in runs:
                    yield from self.regex.original.finditer(text, a, b)
                return
        yield from self.regex.finditer(text, lowered)

    def iter_spans(self, text: str, lowered: str | None = None) -> Iterator[tuple[int, int]]:
        """(start, end) of every valid value in ``text``, in order, lazily."""
        for m in self._matches(text, lowered):
            group: str | int = "value" if "value" in m.re.groupindex else (1 if m.re.groups else 0)
            value = m.group(group)
            if not value:
                continue
            start = m.start(group)
            if self.validator is None:
                yield (start, start + len(value))
            else:
                yield from ((start + a, start + b) for a, b in self.validator(value))

    def spans(self, text: str, lowered: str | None = None) -> list[tuple[int, int]]:
        """(start, end) of every valid value in ``text``."""
        return list(self.iter_spans(text, lowered))

    def iter_values(self, text: str, lowered: str | None = None) -> Iterator[str]:
        for a, b in self.iter_spans(text, lowered):
            yield mask_digits(text[a:b]) if self.mask else text[a:b]

    def values(self, text: str, lowered: str | None = None) -> list[str]:
        return list(self.iter_values(text, lowered))


_ORDER = (
    r"(?i)\b(?:order|bestellung|commande|pedido)\s*(?:number|num\.?|no\.?|nr\.?|id|#)?\s*[:.]?\s*"
    r"#?\s*(?P<value>\d{4,12})\b"
)
_PO = r"\b(?P<value>PO[- ]?\d{3,10})\b"
_INVOICE = (
    r"(?i)\b(?:invoice|rechnung|facture)\s*(?:number|num\.?|no\.?|nr\.?|id|#)?\s*[:.]?\s*#?\s*"
    r"(?P<value>(?:[a-z]{2,5}-)?\d[\d-]{1,14}\d)\b"
)
_CARD = r"(?P<value>[0-9][0-9 -]{11,}[0-9])"
"""Runs of digits with single spaces or dashes; `luhn_spans` finds the card numbers in them."""


def default_entities(ticket_prefix: str) -> list[EntityConfig]:
    ticket = rf"(?<![A-Za-z0-9])(?P<value>{re.escape(ticket_prefix)}\d{{1,10}})\b"
    return [
        EntityConfig(name="orderId", pattern=_ORDER),
        EntityConfig(name="poNumber", pattern=_PO),
        EntityConfig(name="invoiceId", pattern=_INVOICE),
        EntityConfig(name="ticketId", pattern=ticket),
        EntityConfig(name="cardNumber", pattern=_CARD, validator="luhn", mask=True),
    ]


def compile_pattern(pattern: str) -> CiPattern:
    """A plain Python regex (``(?i)`` prefix allowed), or the rules' ``/regex/flags`` form."""
    from mailgate.pipeline.rules import regex_parts

    parts = regex_parts(pattern)
    if parts is not None:
        return CiPattern.compile(*parts)
    body, flags = split_inline_flags(pattern)
    return CiPattern.compile(body, flags)


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


def _lowered(env: Envelope, f: str, cache: dict[str, str]) -> str:
    low = cache.get(f)
    if low is None:
        text = env.get(f)
        low = text.lower() if isinstance(text, str) else ""
        cache[f] = low
    return low


SpanCache = dict[tuple[str, str], tuple[str, list[tuple[int, int]]]]
"""(entity, field) -> (the text scanned, every span in it): what `extract` found for a masking
entity, so that `mask` does not scan the same text again."""


def extract(
    env: Envelope,
    patterns: Iterable[EntityPattern],
    lowered: dict[str, str] | None = None,
    spans: SpanCache | None = None,
) -> dict[str, list[str]]:
    """Every entity found in its fields, values in order of appearance, without repeats (the
    first `MAX_VALUES` distinct ones).

    ``lowered`` caches ``field -> text.lower()`` (shared with the rules' matchers).
    """
    cache = lowered if lowered is not None else {}
    found: dict[str, list[str]] = {}
    for p in patterns:
        values: dict[str, None] = {}  # ordered set: a list's `in` made many values quadratic
        for f in p.fields:
            text = env.get(f)
            if isinstance(text, str) and text:
                low = _lowered(env, f, cache)
                if len(text) > SCAN_LIMIT:
                    text, low = text[:SCAN_LIMIT], low[:SCAN_LIMIT]
                found_values: Iterable[str]
                if p.mask and spans is not None:
                    # masking needs every span anyway: find them all once, for `mask` too
                    found_spans = p.spans(text, low)
                    spans[(p.name, f)] = (text, found_spans)
                    found_values = (mask_digits(text[a:b]) for a, b in found_spans)
                else:
                    found_values = p.iter_values(text, low)
                for value in found_values:
                    values[value] = None
                    if len(values) >= MAX_VALUES:
                        break
            if len(values) >= MAX_VALUES:
                break
        if values:
            found[p.name] = list(values)
    return found


def mask(env: Envelope, patterns: Iterable[EntityPattern], known: SpanCache | None = None) -> int:
    """Mask the values of masking entities in the envelope's text fields; returns how many.

    ``known`` holds spans `extract` already found (used only for the very same text)."""
    count = 0
    for p in patterns:
        if not p.mask:
            continue
        before: dict[str, str] = {}  # field -> text as it was before masking
        for f in MASKED_FIELDS:
            text = env.get(f)
            if not isinstance(text, str) or not text:
                continue
            if f == "replyText" and "text" in before:
                full = before["text"]
                if text == full:  # no quoted history was stripped: same text, same result
                    if env["text"] != full:
                        env[f] = env["text"]
                    continue
                if env["text"] == full and (full.startswith(text) or text in full):
                    continue  # part of a text that had nothing to mask
            before[f] = text
            cached = known.get((p.name, f)) if known is not None else None
            spans = cached[1] if cached is not None and cached[0] is text else p.spans(text)
            if not spans:
                continue
            # a card's CVV/expiry next to it are masked in full (issue 15, card_context)
            near = companion_spans(text, spans) if p.validator is luhn_spans else []
            parts = []
            last = 0
            for a, b, keep in sorted([(a, b, 4) for a, b in spans] + [(a, b, 0) for a, b in near]):
                parts.append(text[last:a])
                parts.append(mask_digits(text[a:b], keep))
                last = b
            parts.append(text[last:])
            env[f] = "".join(parts)
            count += len(spans)
    return count
