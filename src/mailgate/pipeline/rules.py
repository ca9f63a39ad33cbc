"""Routing rules: TOML tables -> compiled predicates, their evaluation, and the decision.

Rules come from ``[[rules]]`` in ``mailgate.toml`` and then from ``pipeline.rules_file`` (a
TOML file of ``[[rules]]``, relative to the config file), in that order. They are compiled and
validated when the config loads (`validate_rules`, one of ``app.config_validators``), so
``check-config`` and ``serve`` refuse a bad rule with its file, line and key path, e.g.
``rules.toml:7: rules[1].if.any[0].subject = '/inv(/i': expected a valid regex (...)``.

A rule::

    [[rules]]
    name = "billing"                       # unique; shown in route.rule
    tenant = "acme"                        # optional: only for this tenant (or a list)
    confidence = 0.9                       # optional, default 1.0: route.confidence when it decides
    if.any = [{ subject = "/invoice|refund|billing/i" }, { to = "billing@" }]
    then = { queue = "billing", tags = ["billing"], priority = "high" }

Conditions. ``if`` is a condition table; a table with several matcher keys needs all of them
(AND); ``any = [...]`` needs one of its tables, ``all = [...]`` each of them, ``not = {...}``
(or a list) none of them; they nest. A rule without ``if`` matches every message (useful as a
per-tenant default at the end).

Matchers (`FIELDS`): ``from to cc replyTo recipient mailFrom`` (addresses), ``customer`` (the
original sender when a colleague forwarded a customer's mail, else From), ``from.name``,
``from.domain``, ``subject text html replyText``, ``header.<Name>``, ``attachment.filename``,
``attachment.extension``, ``attachment.type`` (declared), ``attachment.sniffed`` (detected from
the bytes), ``attachment.size``, ``attachments`` (count), ``dkim|spf|dmarc|arc.passed``,
``dkim|spf|dmarc|arc.result``, ``…domain``, ``dmarc.policy``, ``authAction``, ``spam.action``,
``spam.symbol`` (rspamd symbol names), ``antivirus.signature``, ``spam.score``,
``spam.flagged``, ``tenant``, ``intent``, ``thread.isReply``, ``thread.matchedBy``,
``thread.ticket``, ``entity`` (names present) and ``entities.<name>`` (values), ``parseError``.

Values. ``"/regex/flags"`` searches (flags ``i m s x a``); any other string is, by field kind:
*text* — a case-insensitive substring; *address* — ``user@host`` exact, ``user@`` the local
part, ``@host`` or ``host`` the domain or a subdomain of it; *keyword* — case-insensitive
equality, ``*``/``?`` globs allowed; *number* — ``"> 5"``, ``">= 10MB"``, ``"< 2"``, ``"== 0"``
or a plain number. ``true``/``false`` on a bool field compares; on any other field it tests
presence. A list of values matches when any does.

Actions (``then``): ``queue``, ``tags``, ``priority`` (low, normal, high, urgent), ``webhooks``
(target names of the message's tenant), ``reply`` (a template name, or false for no
acknowledgement), ``quarantine`` (a reason), ``stop`` (true: later rules are not evaluated).

Semantics. Rules are evaluated top to bottom and *accumulate*: every matching rule contributes,
until a matching rule with ``stop = true`` (which contributes too). ``queue``, ``reply`` and
``quarantine`` take the *first* matching rule that sets them (earlier rules win); ``tags`` are
the union in order; ``priority`` is the highest any matching rule sets (default ``normal``);
``webhooks`` narrows delivery to the union of the named targets (default: all the tenant's
targets; targets of other tenants are never used). ``route.rule`` is the rule that set the queue
(else the first that matched), ``route.confidence`` its ``confidence`` (0.0 when no rule matched:
the message goes to ``pipeline.default_queue``), ``route.reasons`` every hit and why.
"""

from __future__ import annotations

import fnmatch
import operator
import re
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mailgate.config import Config, ConfigError, parse_size
from mailgate.envelope import Envelope
from mailgate.envelope_view import EnvView, domain_of, emails, names
from mailgate.pipeline.fastre import CiPattern

PRIORITIES = ("low", "normal", "high", "urgent")
HEADER_SCAN_LIMIT = 4096
"""Subject matchers look at 4096 characters (RFC 5322 caps a line at 998)."""
BODY_SCAN_LIMIT = 256 * 1024
"""Body matchers look at the first 256 Ki characters (SpamAssassin's body rules stop at
50 KB, ``body_part_scan_size``): what support mail says is at the top, and a hostile 20 MB
body must not cost 50 rules x 20 MB."""
THEN_KEYS = ("queue", "tags", "priority", "webhooks", "reply", "quarantine", "stop")
RULE_KEYS = ("name", "description", "tenant", "confidence", "enabled", "if", "then")
SNIPPET = 60
SHORT = 256

Kind = Literal["text", "address", "keyword", "bool", "number"]


# --------------------------------------------------------------------------- facts


class Facts:
    """What rules match on: the envelope (as filled by earlier stages) plus lazy entities."""

    __slots__ = ("_entities", "_entities_fn", "_lower", "_scans", "_values", "env", "view")

    def __init__(
        self,
        env: Envelope,
        view: EnvView | None = None,
        entities: Callable[[], dict[str, list[str]]] | None = None,
        lowered: dict[str, str] | None = None,
    ) -> None:
        self.env = env
        self.view = view or EnvView(env)
        self._entities_fn = entities
        self._entities: dict[str, list[str]] | None = None
        self._lower: dict[str, str] = lowered if lowered is not None else {}
        self._values: dict[str, list[Any]] = {}
        self._scans: dict[str, tuple[str, str]] = {}

    def values(self, name: str, spec: FieldSpec) -> list[Any]:
        """The field's values for this message, computed once per run."""
        got = self._values.get(name)
        if got is None:
            got = spec.get(self)
            self._values[name] = got
        return got

    @property
    def entities(self) -> dict[str, list[str]]:
        if self._entities is None:
            if self._entities_fn is not None:
                self._entities = self._entities_fn()
            else:
                found = self.env.get("entities")
                self._entities = found if isinstance(found, dict) else {}
        return self._entities

    def scan_text(self, key: str, value: str, limit: int) -> tuple[str, str]:
        """(the first ``limit`` characters of a field, lower-cased copy), cached per run."""
        cached = self._scans.get(key)
        if cached is None:
            low = self.lower(key, value)
            cached = (value[:limit], low[:limit]) if limit and len(value) > limit else (value, low)
            self._scans[key] = cached
        return cached

    def lower(self, key: str, value: str) -> str:
        """A cached casefold of a (possibly large) text field."""
        cached = self._lower.get(key)
        if cached is None:
            cached = value.lower()
            self._lower[key] = cached
        return cached


Getter = Callable[[Facts], list[Any]]


@dataclass(frozen=True)
class FieldSpec:
    kind: Kind
    get: Getter
    body: bool = False
    """A message body: reasons name the pattern but never quote the text."""
    cache_key: str | None = None
    scan_limit: int = 0
    """Regexes see only this many leading characters (0: all); see `BODY_SCAN_LIMIT`."""


def _addr(key: str) -> Getter:
    return lambda f: emails(f.env.get(key))


def _customer(f: Facts) -> list[Any]:
    """The effective customer: the original sender of a colleague's forward, else From."""
    return emails(f.env.get("customer")) or emails(f.env.get("from"))


def _text(key: str) -> Getter:
    return lambda f: [f.view.text(key)] if f.view.text(key) else []


def _auth(section: str, key: str) -> Getter:
    def get(f: Facts) -> list[Any]:
        value = f.view.section(section).get(key)
        return [] if value is None else [value]

    return get


def _attachments(key: str) -> Getter:
    def get(f: Facts) -> list[Any]:
        return [a[key] for a in f.view.attachments if a.get(key) not in (None, "")]

    return get


def _extension(f: Facts) -> list[Any]:
    out = []
    for a in f.view.attachments:
        name = a.get("filename")
        if isinstance(name, str) and "." in name:
            out.append(name.rsplit(".", 1)[1].lower())
    return out


def _path(*keys: str) -> Getter:
    def get(f: Facts) -> list[Any]:
        value: Any = f.env
        for k in keys:
            if not isinstance(value, dict):
                return []
            value = value.get(k)
        if value is None or value == "":
            return []
        return value if isinstance(value, list) else [value]

    return get


def _from_domain(f: Facts) -> list[Any]:
    return [domain_of(e) for e in emails(f.env.get("from"))]


def _spam_symbols(f: Facts) -> list[Any]:
    symbols = f.view.section("spam").get("symbols")
    if not isinstance(symbols, list):
        return []
    return [s["name"] for s in symbols if isinstance(s, dict) and isinstance(s.get("name"), str)]


def _parse_errors(f: Facts) -> list[Any]:
    errors = f.env.get("parseErrors")
    if not isinstance(errors, list):
        return []
    return [e.get("code") for e in errors if isinstance(e, dict) and e.get("code")]


FIELDS: dict[str, FieldSpec] = {
    "from": FieldSpec("address", _addr("from")),
    "customer": FieldSpec("address", _customer),
    "from.name": FieldSpec("text", lambda f: names(f.env.get("from"))),
    "from.domain": FieldSpec("keyword", _from_domain),
    "to": FieldSpec("address", _addr("to")),
    "cc": FieldSpec("address", _addr("cc")),
    "replyTo": FieldSpec("address", _addr("replyTo")),
    "recipient": FieldSpec("address", lambda f: f.view.rcpt_to),
    "mailFrom": FieldSpec("address", lambda f: [f.view.mail_from] if f.view.mail_from else []),
    "subject": FieldSpec("text", _text("subject"), False, "subject", HEADER_SCAN_LIMIT),
    "text": FieldSpec("text", _text("text"), True, "text", BODY_SCAN_LIMIT),
    "replyText": FieldSpec("text", _text("replyText"), True, "replyText", BODY_SCAN_LIMIT),
    "html": FieldSpec("text", _text("html"), True, "html", BODY_SCAN_LIMIT),
    "attachment.filename": FieldSpec("text", _attachments("filename")),
    "attachment.extension": FieldSpec("keyword", _extension),
    "attachment.type": FieldSpec("keyword", _attachments("contentType")),
    "attachment.sniffed": FieldSpec("keyword", _attachments("detectedType")),
    "attachment.size": FieldSpec("number", _attachments("size")),
    "attachments": FieldSpec("number", lambda f: [len(f.view.attachments)]),
    "authAction": FieldSpec("keyword", _path("authAction", "action")),
    "spam.score": FieldSpec("number", _path("spam", "score")),
    "spam.flagged": FieldSpec("bool", _path("spam", "flagged")),
    "spam.action": FieldSpec("keyword", _path("spam", "action")),
    "spam.symbol": FieldSpec("keyword", _spam_symbols),
    "antivirus.signature": FieldSpec("keyword", _path("antivirus", "signature")),
    "tenant": FieldSpec("keyword", lambda f: [f.view.tenant]),
    "intent": FieldSpec("keyword", _path("intent")),
    "thread.isReply": FieldSpec("bool", _path("thread", "isReply")),
    "thread.matchedBy": FieldSpec("keyword", _path("thread", "matchedBy")),
    "thread.ticket": FieldSpec("keyword", _path("thread", "ticket")),
    "entity": FieldSpec("keyword", lambda f: [k for k, v in f.entities.items() if v]),
    "parseError": FieldSpec("keyword", _parse_errors),
}
for _section in ("dkim", "spf", "dmarc", "arc"):
    FIELDS[f"{_section}.passed"] = FieldSpec("bool", _auth(_section, "passed"))
    FIELDS[f"{_section}.result"] = FieldSpec("keyword", _auth(_section, "result"))
    FIELDS[f"{_section}.domain"] = FieldSpec("keyword", _auth(_section, "domain"))
FIELDS["dmarc.policy"] = FieldSpec("keyword", _auth("dmarc", "policy"))

PREFIX_FIELDS = ("header.", "entities.")


def field_spec(name: str) -> FieldSpec | None:
    spec = FIELDS.get(name)
    if spec is not None:
        return spec
    if name.startswith("header.") and len(name) > 7:
        header = name[7:]
        return FieldSpec("text", lambda f: f.view.header(header))
    if name.startswith("entities.") and len(name) > 9:
        entity = name[9:]
        return FieldSpec("text", lambda f: list(f.entities.get(entity) or []))
    return None


# --------------------------------------------------------------------------- values


_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "a": re.ASCII}
_REGEX_LITERAL = re.compile(r"^/(.*)/([a-z]*)$", re.DOTALL)


def regex_parts(value: str) -> tuple[str, int] | None:
    """``"/invoice|refund/i"`` -> (pattern, flags); None when ``value`` is not in that form.

    Raises ``ValueError`` for an unknown flag.
    """
    m = _REGEX_LITERAL.match(value)
    if m is None or len(value) < 2:
        return None
    flags = 0
    for ch in m.group(2):
        if ch not in _FLAGS:
            raise ValueError(f"unknown regex flag {ch!r} (use i, m, s, x, a)")
        flags |= _FLAGS[ch]
    return m.group(1), flags


def parse_regex_literal(value: str) -> re.Pattern[str] | None:
    """``"/invoice|refund/i"`` -> compiled regex; None when ``value`` is not in that form.

    Raises ``re.error`` for a bad pattern and ``ValueError`` for an unknown flag.
    """
    parts = regex_parts(value)
    return None if parts is None else re.compile(parts[0], parts[1])


_CMP = re.compile(r"^\s*(>=|<=|==|!=|>|<|=)?\s*([0-9.]+\s*[a-zA-Z]*)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
}


class Value(ABC):
    """One compiled value of a matcher; ``test`` returns the matching text (or "") or None."""

    text: str

    @abstractmethod
    def test(self, values: list[Any], facts: Facts, spec: FieldSpec) -> str | None: ...


class RegexValue(Value):
    def __init__(self, regex: CiPattern, text: str) -> None:
        self.regex = regex
        self.text = text

    def test(self, values: list[Any], facts: Facts, spec: FieldSpec) -> str | None:
        for v in values:
            s = v if isinstance(v, str) else str(v)
            if len(s) < SHORT:  # a short value: one IGNORECASE search beats lowering
                m = self.regex.original.search(s)
            elif spec.cache_key:
                s, low = facts.scan_text(spec.cache_key, s, spec.scan_limit)
                m = self.regex.search(s, low)
            else:
                m = self.regex.search(s[:BODY_SCAN_LIMIT])
            if m is not None:
                return m.group(0)
        return None


class ContainsValue(Value):
    def __init__(self, needle: str) -> None:
        self.needle = needle.lower()
        self.text = f"contains {needle!r}"

    def test(self, values: list[Any], facts: Facts, spec: FieldSpec) -> str | None:
        for v in values:
            s = v if isinstance(v, str) else str(v)
            if spec.cache_key:
                s, hay = facts.scan_text(spec.cache_key, s, spec.scan_limit)
            else:
                hay = s.lower()
            i = hay.find(self.needle)
            if i >= 0:
                return s[i : i + len(self.needle)]
        return None


class AddressValue(Value):
    def __init__(self, pattern: str) -> None:
        p = pattern.strip().lower()
        self.text = f"= {pattern}"
        local, at, host = p.rpartition("@")
        self.mode: str
        if at and local and host:
            self.mode, self.arg = "exact", p
        elif at and local:
            self.mode, self.arg = "local", local
        else:
            self.mode, self.arg = "domain", host.lstrip(".")

    def test(self, values: list[Any], facts: Facts, spec: FieldSpec) -> str | None:
        for v in values:
            s = str(v).lower()
            local, _, host = s.rpartition("@")
            if self.mode == "exact":
                ok = s == self.arg
            elif self.mode == "local":
                ok = local == self.arg or local.split("+", 1)[0] == self.arg
            else:
                ok = host == self.arg or host.endswith("." + self.arg)
            if ok:
                return s
        return None


class KeywordValue(Value):
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern.lower()
        self.glob = any(c in pattern for c in "*?[")
        self.text = f"= {pattern}"

    def test(self, values: list[Any], facts: Facts, spec: FieldSpec) -> str | None:
        for v in values:
            s = str(v).lower()
            if fnmatch.fnmatchcase(s, self.pattern) if self.glob else s == self.pattern:
                return str(v)
        return None


class CompareValue(Value):
    def __init__(self, op: str, number: float, text: str) -> None:
        self.op = _OPS[op]
        self.number = number
        self.text = text

    def test(self, values: list[Any], facts: Facts, spec: FieldSpec) -> str | None:
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float):
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    continue
            if self.op(float(v), self.number):
                return str(v)
        return None


class BoolValue(Value):
    def __init__(self, expected: bool) -> None:
        self.expected = expected
        self.text = f"= {str(expected).lower()}"

    def test(self, values: list[Any], facts: Facts, spec: FieldSpec) -> str | None:
        if spec.kind == "bool":
            actual = bool(values and values[0] is True)
            return str(actual).lower() if actual == self.expected else None
        present = any(v not in (None, "", [], {}) for v in values)
        if present == self.expected:
            return "present" if present else "absent"
        return None


def compile_value(spec: FieldSpec, value: Any) -> Value:
    """One matcher value -> `Value`; raises ValueError with what was expected."""
    if isinstance(value, bool):
        return BoolValue(value)
    if spec.kind == "bool":
        raise ValueError("true or false")
    if isinstance(value, int | float):
        if spec.kind != "number":
            raise ValueError("a string or a /regex/ (numbers only for numeric fields)")
        return CompareValue("==", float(value), f"== {value}")
    if not isinstance(value, str):
        raise ValueError("a string, a /regex/flags, true/false or a list of them")
    if spec.kind == "number":
        m = _CMP.match(value)
        if m is None:
            raise ValueError('a comparison like "> 5", ">= 10MB" or a number')
        num_text = m.group(2).replace(" ", "")
        try:
            number = float(num_text)
        except ValueError:
            number = float(parse_size(num_text))
        return CompareValue(m.group(1) or "==", number, f"{m.group(1) or '=='} {m.group(2)}")
    parts = regex_parts(value)
    if parts is not None:
        try:
            regex = CiPattern.compile(*parts)
        except re.error as exc:
            raise ValueError(f"a valid regex ({exc})") from None
        return RegexValue(regex, f"~ {value}")
    if not value:
        raise ValueError("a non-empty string")
    if spec.kind == "address":
        return AddressValue(value)
    if spec.kind == "keyword":
        return KeywordValue(value)
    return ContainsValue(value)


# --------------------------------------------------------------------------- conditions


_MISS: tuple[bool, list[str]] = (False, [])
"""Shared result of a condition that did not match (never mutated)."""


class Node(ABC):
    """A compiled condition: a matcher or an any/all/not combinator."""

    @abstractmethod
    def eval(self, facts: Facts) -> tuple[bool, list[str]]: ...

    @abstractmethod
    def describe(self) -> str: ...


class Match(Node):
    def __init__(self, name: str, spec: FieldSpec, values: list[Value]) -> None:
        self.name = name
        self.spec = spec
        self.values = values
        self.has_bool = any(isinstance(v, BoolValue) for v in values)

    def eval(self, facts: Facts) -> tuple[bool, list[str]]:
        got = facts._values.get(self.name)
        if got is None:
            got = facts.values(self.name, self.spec)
        if not got and not self.has_bool:
            return _MISS
        spec = self.spec
        for v in self.values:
            hit = v.test(got, facts, spec)
            if hit is not None:
                reason = f"{self.name} {v.text}"
                if hit and not self.spec.body and not isinstance(v, BoolValue):
                    snippet = hit if len(hit) <= SNIPPET else hit[: SNIPPET - 1] + "…"
                    if snippet.lower() != v.text.lower():
                        reason += f" ({snippet!r})"
                return True, [reason]
        return _MISS

    def describe(self) -> str:
        return " or ".join(f"{self.name} {v.text}" for v in self.values)


class All(Node):
    def __init__(self, children: list[Node]) -> None:
        self.children = children

    def eval(self, facts: Facts) -> tuple[bool, list[str]]:
        reasons: list[str] = []
        for c in self.children:
            ok, why = c.eval(facts)
            if not ok:
                return _MISS
            reasons.extend(why)
        return True, reasons

    def describe(self) -> str:
        if len(self.children) == 1:
            return self.children[0].describe()
        return "all(" + "; ".join(c.describe() for c in self.children) + ")"


class Any_(Node):
    def __init__(self, children: list[Node]) -> None:
        self.children = children

    def eval(self, facts: Facts) -> tuple[bool, list[str]]:
        for c in self.children:
            ok, why = c.eval(facts)
            if ok:
                return True, why
        return False, []

    def describe(self) -> str:
        return "any(" + "; ".join(c.describe() for c in self.children) + ")"


class Not(Node):
    def __init__(self, child: Node) -> None:
        self.child = child

    def eval(self, facts: Facts) -> tuple[bool, list[str]]:
        ok, _ = self.child.eval(facts)
        if ok:
            return False, []
        return True, [f"not {self.child.describe()}"]

    def describe(self) -> str:
        return f"not {self.child.describe()}"


class Always(Node):
    def eval(self, facts: Facts) -> tuple[bool, list[str]]:
        return True, ["no condition (matches every message)"]

    def describe(self) -> str:
        return "always"


def _flatten(table: dict[str, Any]) -> dict[str, Any]:
    """TOML dotted keys (``dmarc.result = "fail"``) arrive as nested tables; join them back."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and key not in ("any", "all", "not"):
            for sub, inner in _flatten(value).items():
                out[f"{key}.{sub}"] = inner
        else:
            out[key] = value
    return out


def _compile_condition(table: Any, path: str) -> Node:
    if not isinstance(table, dict):
        raise _RuleError(path, table, "a table of matchers (or any/all/not)")
    if not table:
        raise _RuleError(path, table, "at least one matcher")
    parts: list[Node] = []
    for key, value in _flatten(table).items():
        sub = f"{path}.{key}"
        if key in ("any", "all"):
            if not isinstance(value, list) or not value:
                raise _RuleError(sub, value, "a non-empty list of condition tables")
            children = [_compile_condition(v, f"{sub}[{i}]") for i, v in enumerate(value)]
            parts.append(Any_(children) if key == "any" else All(children))
        elif key == "not":
            if isinstance(value, list):
                if not value:
                    raise _RuleError(sub, value, "a condition table or a non-empty list of them")
                parts.append(
                    Not(Any_([_compile_condition(v, f"{sub}[{i}]") for i, v in enumerate(value)]))
                )
            else:
                parts.append(Not(_compile_condition(value, sub)))
        else:
            spec = field_spec(key)
            if spec is None:
                known = ", ".join([*sorted(FIELDS), "header.<Name>", "entities.<name>"])
                raise _RuleError(sub, value, f"a known matcher: any, all, not, {known}", key=True)
            raw = value if isinstance(value, list) else [value]
            if not raw:
                raise _RuleError(sub, value, "a value or a non-empty list of values")
            values = []
            for i, v in enumerate(raw):
                try:
                    values.append(compile_value(spec, v))
                except ValueError as exc:
                    at = f"{sub}[{i}]" if isinstance(value, list) else sub
                    raise _RuleError(at, v, str(exc)) from None
            parts.append(Match(key, spec, values))
    return parts[0] if len(parts) == 1 else All(parts)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Actions:
    queue: str | None = None
    tags: tuple[str, ...] = ()
    priority: str | None = None
    webhooks: tuple[str, ...] | None = None
    reply: str | bool | None = None
    quarantine: str | None = None
    stop: bool = False

    def describe(self) -> str:
        parts = []
        for key in THEN_KEYS:
            value = getattr(self, key)
            if value not in (None, (), False) or (key == "reply" and value is False):
                parts.append(f"{key}={list(value) if isinstance(value, tuple) else value}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Rule:
    name: str
    index: int
    condition: Node
    actions: Actions
    tenants: frozenset[str] | None = None
    confidence: float = 1.0
    description: str = ""
    source: str = ""


@dataclass(slots=True)
class RuleHit:
    """One rule's evaluation for one message."""

    rule: Rule
    matched: bool
    reasons: list[str] = field(default_factory=list)
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "matched": self.matched,
            "reasons": list(self.reasons),
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class Decision:
    """The route a message takes, and why (see the module docstring for the semantics)."""

    queue: str
    tags: list[str]
    priority: str
    rule: str | None
    confidence: float
    reasons: list[str]
    webhooks: tuple[str, ...] | None
    reply: str | bool | None
    quarantine: tuple[str, str] | None


class RuleSet:
    """Compiled rules in evaluation order."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = tuple(rules)
        # A miss carries nothing but its rule: one shared, never-mutated record per rule.
        self._misses = {id(r): RuleHit(r, False) for r in self.rules}
        self._plan = tuple(
            (r, r.condition.eval, r.tenants, self._misses[id(r)]) for r in self.rules
        )

    def __len__(self) -> int:
        return len(self.rules)

    def evaluate(self, facts: Facts) -> list[RuleHit]:
        tenant = facts.view.tenant
        hits: list[RuleHit] = []
        stopped_by: str | None = None
        append = hits.append
        for rule, condition, tenants, miss in self._plan:
            if stopped_by is not None:
                append(RuleHit(rule, False, skipped=f"after stop in rule {stopped_by!r}"))
                continue
            if tenants is not None and tenant not in tenants:
                append(RuleHit(rule, False, skipped=f"tenant {tenant!r} not in rule"))
                continue
            ok, why = condition(facts)
            if not ok:
                append(miss)
                continue
            append(RuleHit(rule, True, why))
            if rule.actions.stop:
                stopped_by = rule.name
        return hits


def decide(hits: list[RuleHit], default_queue: str) -> Decision:
    """Turn rule hits into a route, following the accumulate/first-wins semantics."""
    queue: str | None = None
    queue_rule: Rule | None = None
    first: Rule | None = None
    tags: list[str] = []
    priority = "normal"
    webhooks: list[str] | None = None
    reply: str | bool | None = None
    quarantine: tuple[str, str] | None = None
    reasons: list[str] = []
    for hit in hits:
        if not hit.matched:
            continue
        rule, act = hit.rule, hit.rule.actions
        first = first or rule
        reasons.append(f"rule {rule.name}: " + "; ".join(hit.reasons))
        if act.queue is not None:
            if queue is None:
                queue, queue_rule = act.queue, rule
            elif act.queue != queue:
                reasons.append(
                    f"rule {rule.name}: queue {act.queue!r} ignored (rule {queue_rule.name if queue_rule else '?'} set it first)"
                )
        for t in act.tags:
            if t not in tags:
                tags.append(t)
        if act.priority is not None and PRIORITIES.index(act.priority) > PRIORITIES.index(priority):
            priority = act.priority
        if act.webhooks is not None:
            webhooks = webhooks or []
            webhooks.extend(w for w in act.webhooks if w not in webhooks)
        if act.reply is not None and reply is None:
            reply = act.reply
        if act.quarantine is not None and quarantine is None:
            quarantine = (act.quarantine, f"rule {rule.name}")
        if act.stop:
            reasons.append(f"rule {rule.name}: stop")
    deciding = queue_rule or first
    if queue is None:
        queue = default_queue
        reasons.append(
            f"default queue {default_queue!r}: "
            + ("no rule matched" if first is None else "no matching rule set a queue")
        )
    return Decision(
        queue=queue,
        tags=tags,
        priority=priority,
        rule=deciding.name if deciding else None,
        confidence=deciding.confidence if deciding else 0.0,
        reasons=reasons,
        webhooks=tuple(webhooks) if webhooks is not None else None,
        reply=reply,
        quarantine=quarantine,
    )


# --------------------------------------------------------------------------- loading


class _RuleError(Exception):
    def __init__(self, path: str, value: Any, expected: str, *, key: bool = False) -> None:
        super().__init__(path)
        self.path = path
        self.value = value
        self.expected = expected
        self.key = key

    def render(self, where: str) -> str:
        if self.key:
            return f"{where}: unknown key {self.path!r}: expected {self.expected}"
        return f"{where}: {self.path} = {self.value!r}: expected {self.expected}"


def _compile_rule(
    data: Any, index: int, path: str, webhooks: dict[str, str], seen: set[str], source: str
) -> Rule:
    if not isinstance(data, dict):
        raise _RuleError(path, data, "a table ([[rules]])")
    for key in data:
        if key not in RULE_KEYS:
            raise _RuleError(f"{path}.{key}", data[key], f"one of {', '.join(RULE_KEYS)}", key=True)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _RuleError(f"{path}.name", name, "a non-empty rule name")
    if name in seen:
        raise _RuleError(f"{path}.name", name, "a unique rule name (already used)")
    seen.add(name)
    condition = _compile_condition(data["if"], f"{path}.if") if "if" in data else Always()
    tenants = None
    if "tenant" in data:
        t = data["tenant"]
        if isinstance(t, str) and t:
            tenants = frozenset([t])
        elif isinstance(t, list) and t and all(isinstance(x, str) and x for x in t):
            tenants = frozenset(t)
        else:
            raise _RuleError(f"{path}.tenant", t, "a tenant name or a list of them")
    confidence = data.get("confidence", 1.0)
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not 0 <= confidence <= 1
    ):
        raise _RuleError(f"{path}.confidence", confidence, "a number from 0 to 1")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _RuleError(f"{path}.enabled", enabled, "true or false")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _RuleError(f"{path}.description", description, "a string")
    if "then" not in data:
        raise _RuleError(f"{path}.then", None, "a table of actions (" + ", ".join(THEN_KEYS) + ")")
    actions = _compile_actions(data["then"], f"{path}.then", webhooks, tenants)
    return Rule(
        name=name,
        index=index,
        condition=condition,
        actions=actions,
        tenants=tenants,
        confidence=float(confidence),
        description=description,
        source=source,
    )


def _compile_actions(
    then: Any, path: str, webhooks: dict[str, str], tenants: frozenset[str] | None
) -> Actions:
    if not isinstance(then, dict):
        raise _RuleError(path, then, "a table of actions (" + ", ".join(THEN_KEYS) + ")")
    if not then:
        raise _RuleError(path, then, "at least one action (" + ", ".join(THEN_KEYS) + ")")
    for key in then:
        if key not in THEN_KEYS:
            raise _RuleError(f"{path}.{key}", then[key], f"one of {', '.join(THEN_KEYS)}", key=True)

    def string(key: str) -> str | None:
        v = then.get(key)
        if v is None:
            return None
        if not isinstance(v, str) or not v.strip():
            raise _RuleError(f"{path}.{key}", v, "a non-empty string")
        return v

    def strings(key: str) -> tuple[str, ...] | None:
        v = then.get(key)
        if v is None:
            return None
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise _RuleError(f"{path}.{key}", v, "a list of non-empty strings")
        return tuple(v)

    priority = string("priority")
    if priority is not None and priority not in PRIORITIES:
        raise _RuleError(f"{path}.priority", priority, "one of " + ", ".join(PRIORITIES))
    hooks = strings("webhooks")
    for i, w in enumerate(hooks or ()):
        if w not in webhooks:
            known = ", ".join(sorted(webhooks)) or "none configured"
            raise _RuleError(f"{path}.webhooks[{i}]", w, f"a configured webhook target ({known})")
        if tenants is not None and webhooks[w] not in tenants:
            raise _RuleError(
                f"{path}.webhooks[{i}]",
                w,
                f"a target of the rule's tenant (it belongs to tenant {webhooks[w]!r})",
            )
    reply = then.get("reply")
    if reply is not None and not (reply is False or (isinstance(reply, str) and reply.strip())):
        raise _RuleError(f"{path}.reply", reply, "a template name, or false for no reply")
    stop = then.get("stop", False)
    if not isinstance(stop, bool):
        raise _RuleError(f"{path}.stop", stop, "true or false")
    return Actions(
        queue=string("queue"),
        tags=strings("tags") or (),
        priority=priority,
        webhooks=hooks,
        reply=reply,
        quarantine=string("quarantine"),
        stop=stop,
    )


def _rule_line(text: str, index: int, keypath: str) -> int | None:
    """The line of ``keypath`` inside the ``index``-th ``[[rules]]`` table (best effort)."""
    lines = text.splitlines()
    headers = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[\s*rules\s*\]\]", ln)]
    if index >= len(headers):
        return None
    start = headers[index]
    end = len(lines)
    for j in range(start + 1, len(lines)):
        if re.match(r"^\s*\[", lines[j]):
            end = j
            break
    parts = [p for p in re.split(r"[.\[\]]+", keypath) if p and not p.isdigit()][1:]
    # The first key of the path that appears at the start of a line is the best anchor.
    for part in parts:
        for j in range(start + 1, end):
            if re.match(rf"^\s*\"?{re.escape(part)}\"?\s*[.=]", lines[j]):
                deeper = parts[-1]
                for k in range(j, end):
                    if re.search(rf"(^|[\s{{,])\"?{re.escape(deeper)}\"?\s*=", lines[k]):
                        return k + 1
                return j + 1
    return start + 1


def _rules_file(cfg: Config) -> Path | None:
    name = cfg.pipeline.rules_file
    if not name:
        return None
    p = Path(name)
    if not p.is_absolute() and cfg.source not in ("", "<defaults>"):
        p = Path(cfg.source).parent / p
    return p


def load_rules(cfg: Config, where: Callable[[str], str] | None = None) -> RuleSet:
    """Compile ``[[rules]]`` then ``pipeline.rules_file``; `ConfigError` names file:line and key."""
    webhooks = {(w.name or w.url): w.tenant for w in cfg.webhooks}
    seen: set[str] = set()
    rules: list[Rule] = []
    sources: list[tuple[str, str, list[Any]]] = []
    inline = cfg.rules
    if inline is not None and not isinstance(inline, list):
        loc = where("rules") if where else cfg.source
        raise ConfigError(f"{loc}: rules = {inline!r}: expected a list of [[rules]] tables")
    main_text = ""
    if cfg.source not in ("", "<defaults>"):
        try:
            main_text = Path(cfg.source).read_text(encoding="utf-8")
        except OSError:
            main_text = ""
    sources.append((cfg.source, main_text, list(inline or [])))
    path = _rules_file(cfg)
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except FileNotFoundError:
            loc = where("pipeline.rules_file") if where else cfg.source
            raise ConfigError(
                f"{loc}: pipeline.rules_file = {cfg.pipeline.rules_file!r}: file not found ({path})"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read rules file: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        extra = set(data) - {"rules"}
        if extra:
            raise ConfigError(f"{path}: unknown key {sorted(extra)[0]!r}: expected only [[rules]]")
        file_rules = data.get("rules", [])
        if not isinstance(file_rules, list):
            raise ConfigError(f"{path}: rules: expected [[rules]] tables")
        sources.append((str(path), text, file_rules))
    for source, text, items in sources:
        for i, item in enumerate(items):
            keypath = f"rules[{i}]"
            try:
                rule = _compile_rule(item, len(rules), keypath, webhooks, seen, source)
            except _RuleError as exc:
                line = _rule_line(text, i, exc.path) if text else None
                loc = f"{source}:{line}" if line else source
                raise ConfigError(exc.render(loc)) from None
            if isinstance(item, dict) and item.get("enabled", True) is False:
                continue
            rules.append(rule)
    return RuleSet(rules)


def validate_rules(cfg: Config, where: Callable[[str], str]) -> None:
    """Refuse bad rules and entity patterns when the config loads (check-config, serve)."""
    from mailgate.pipeline.entities import build_entities

    load_rules(cfg, where)
    build_entities(cfg.pipeline, where)
