"""``[reply]`` as the responder uses it: addresses, the templates directory, SLA and links.

Also the config validator (`validate`, listed in ``app.config_validators``):
with ``[reply] enabled = true``, ``check-config`` and ``serve`` refuse an unusable From address,
an incomplete DKIM setting or unreadable key, a bad retry schedule, and any template that is
missing or refused (see ``reply.templates``), naming the key and the reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mailgate.config import Config, ConfigError, ReplyConfig
from mailgate.recipients import Accepted, RecipientPolicy
from mailgate.reply.compose import parse_from
from mailgate.reply.guard import is_valid_address
from mailgate.reply.templates import ReplyTemplates, TemplateProblem

_CACHE: dict[tuple[str, str], ReplyTemplates] = {}
_CACHE_LOCK = threading.Lock()


def templates_dir(cfg: Config) -> Path | None:
    """``[reply] templates_dir``, relative to the config file's directory (None: not set).

    The directory may not exist (yet): only the built-ins are found until it does.
    """
    name = cfg.reply.templates_dir
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_absolute() and cfg.source not in ("", "<defaults>"):
        path = Path(cfg.source).parent / path
    return path


def templates_for(cfg: Config) -> ReplyTemplates:
    """The (cached) templates of this config's ``templates_dir``."""
    key = (cfg.reply.templates_dir, cfg.source)
    found = _CACHE.get(key)
    if found is None:
        with _CACHE_LOCK:
            found = _CACHE.get(key)
            if found is None:
                found = ReplyTemplates(templates_dir(cfg))
                _CACHE[key] = found
    return found


def from_for(
    reply: ReplyConfig, policy: RecipientPolicy, tenant: str, rcpt_to: Sequence[str]
) -> tuple[str, str] | None:
    """(display name, address) of an acknowledgement's From for a tenant, or None.

    The customer answers the Reply-To alias (``local+T-7@domain`` of this From), and that
    answer must land in the same tenant, so the From is always an address of the tenant:
    ``tenant_from[tenant]`` when set; else ``from`` when its domain belongs to the tenant; else
    the address the customer wrote to (the first recipient of this tenant, without its
    ``+tag``), with the display name of ``from``. None when no address of the tenant is known.
    """
    per_tenant = reply.tenant_from if isinstance(reply.tenant_from, dict) else {}
    explicit = per_tenant.get(tenant)
    if isinstance(explicit, str):
        return parse_from(explicit)
    name, address = parse_from(reply.from_)
    found = policy.check(address) if address else None
    if isinstance(found, Accepted) and found.tenant == tenant:
        return name, address
    for rcpt in rcpt_to:
        verdict = policy.check(rcpt)
        if isinstance(verdict, Accepted) and verdict.tenant == tenant and "@" in verdict.address:
            return name, f"{verdict.mailbox}@{verdict.domain}"
    return None


def own_addresses(reply: ReplyConfig) -> list[str]:
    out = [parse_from(reply.from_)[1]]
    if isinstance(reply.tenant_from, dict):
        out.extend(parse_from(v)[1] for v in reply.tenant_from.values() if isinstance(v, str))
    return [a for a in out if a]


def per_queue(table: Any, queue: str | None) -> Any:
    """The value for ``queue`` in a per-queue table, else its ``default`` (or ``*``) entry."""
    if not isinstance(table, dict):
        return None
    for key in (queue, "default", "*"):
        if key is not None and key in table:
            return table[key]
    return None


def kb_links(reply: ReplyConfig, queue: str | None) -> list[dict[str, str]]:
    """``kb_links`` for a queue as ``[{title, url}]`` (plain URL strings get the URL as title)."""
    value = per_queue(reply.kb_links, queue)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            out.append({"title": item, "url": item})
        elif isinstance(item, dict) and isinstance(item.get("url"), str):
            out.append({"title": str(item.get("title") or item["url"]), "url": item["url"]})
    return out


def sla_text(reply: ReplyConfig, queue: str | None) -> str:
    value = per_queue(reply.sla, queue)
    return value if isinstance(value, str) else ""


def validate(
    cfg: Config,
    where: Callable[[str], str],
    rule_templates: Sequence[tuple[str, str | None]] = (),
) -> None:
    """See the module docstring. ``rule_templates``: (template, tenant) pairs the routing rules
    name in ``then.reply`` (the pipeline's validator passes them: rules are its config)."""
    reply = cfg.reply
    if not reply.enabled:
        return

    def bad(key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{where('reply.' + key)}: reply.{key} = {value!r}: expected {expected}")

    if not is_valid_address(parse_from(reply.from_)[1]):
        raise bad("from", reply.from_, 'an address like "support@example.com" or "Name <addr>"')
    if not isinstance(reply.tenant_from, dict):
        raise bad("tenant_from", reply.tenant_from, "a table of tenant = address")
    for tenant, value in reply.tenant_from.items():
        if not isinstance(value, str) or not is_valid_address(parse_from(value)[1]):
            raise bad(f"tenant_from.{tenant}", value, "an address")
    dkim = (reply.dkim_domain, reply.dkim_selector, reply.dkim_key_file)
    if any(dkim) and not all(dkim):
        missing = [
            k
            for k, v in zip(("dkim_domain", "dkim_selector", "dkim_key_file"), dkim, strict=True)
            if not v
        ]
        raise bad(missing[0], "", "all of dkim_domain, dkim_selector and dkim_key_file, or none")
    if all(dkim):
        from mailgate.reply.signing import SigningError, load_signer

        try:
            load_signer(*dkim)
        except SigningError as exc:
            raise bad(
                "dkim_key_file", reply.dkim_key_file, f"a readable DKIM key ({exc})"
            ) from None
    from mailgate.retry import RetrySchedule

    try:
        RetrySchedule.parse(reply.retry_schedule)
    except ValueError as exc:
        raise bad("retry_schedule", reply.retry_schedule, str(exc)) from None
    for key in ("per_thread_limit", "per_sender_limit", "global_hourly_cap"):
        if getattr(reply, key) < 0:
            raise bad(key, getattr(reply, key), "0 (no limit) or a positive number")
    templates = ReplyTemplates(templates_dir(cfg))
    try:
        templates.check_all()
        templates.check(reply.default_template)
        for name, tenant in rule_templates:
            templates.check(name, tenant)
    except TemplateProblem as exc:
        raise ConfigError(f"{where('reply.templates_dir')}: {exc}") from None
