"""Load-time checks of the delivery config (``[delivery]``, ``[[webhooks]]``).

Listed in ``app.config_validators`` so ``mailgate check-config`` and ``serve``
refuse a bad retry schedule, an undecodable ``whsec_`` secret or two targets with one name
with the usual one-line ``file:line: key = value: expected …`` error, instead of failing
later in the worker.
"""

from __future__ import annotations

from collections.abc import Callable

from mailgate.config import Config, ConfigError
from mailgate.delivery.signing import secret_key
from mailgate.retry import RetrySchedule
from mailgate.store.delivery import webhook_target_id


def validate(cfg: Config, where: Callable[[str], str]) -> None:
    def bad(key: str, value: object, expected: str) -> ConfigError:
        return ConfigError(f"{where(key)}: {key} = {value!r}: expected {expected}")

    d = cfg.delivery
    try:
        RetrySchedule.parse(d.retry_schedule, jitter=d.jitter if 0 <= d.jitter < 1 else 0.0)
    except ValueError as exc:
        raise bad("delivery.retry_schedule", d.retry_schedule, str(exc)) from None
    if not 0 <= d.jitter < 1:
        raise bad("delivery.jitter", d.jitter, "a fraction from 0 to below 1, like 0.1")
    if d.poll_interval <= 0:
        raise bad("delivery.poll_interval", d.poll_interval, "a positive duration like 500ms")
    if d.breaker_threshold < 1:
        raise bad("delivery.breaker_threshold", d.breaker_threshold, "at least 1")
    seen: dict[str, int] = {}
    for i, w in enumerate(cfg.webhooks):
        tid = webhook_target_id(w.name, w.url)
        if tid in seen:
            raise bad(
                f"webhooks[{i}].name",
                w.name,
                f"a name no other webhook has (webhooks[{seen[tid]}] is also {tid!r})",
            )
        seen[tid] = i
        for j, secret in enumerate(w.secrets):
            try:
                secret_key(secret)
            except ValueError as exc:
                # never echo the secret itself
                raise bad(f"webhooks[{i}].secrets[{j}]", "…", str(exc)) from None
        if w.timeout <= 0:
            raise bad(f"webhooks[{i}].timeout", w.timeout, "a positive duration like 10s")
        if w.max_concurrency < 1:
            raise bad(f"webhooks[{i}].max_concurrency", w.max_concurrency, "at least 1")
        if not w.events:
            raise bad(
                f"webhooks[{i}].events",
                w.events,
                'at least one event type, like "message.received"',
            )
