"""docs/webhooks.md stays true: its verification snippets verify real mailgate requests, and
every delivery/webhook/API config key it should document appears in it."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mailgate.config import ApiConfig, DeliveryConfig, WebhookConfig
from tests.support.delivery import SECRET, fast_delivery, hook, open_store, publish, running_worker
from tests.support.http_receiver import HttpReceiver, Received

DOC = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"


def snippet(marker: str) -> str:
    text = DOC.read_text()
    m = re.search(rf"<!-- {marker} -->\s*```\w+\n(.*?)```", text, re.S)
    assert m, f"no {marker} code block in {DOC}"
    return m.group(1)


async def signed_request(tmp_path: Path, secrets: list[str]) -> Received:
    async with HttpReceiver() as rx, open_store(tmp_path) as store:
        await publish(store, subject="Grüße aus Köln")
        async with running_worker(
            store, [hook(rx.url(), secrets=secrets)], fast_delivery(), tmp_path
        ):
            (req,) = await rx.wait_for(1)
    return req


async def test_python_snippet_verifies_real_requests(tmp_path: Path) -> None:
    other = "whsec_" + base64.b64encode(b"another key of 32 bytes........").decode()
    req = await signed_request(tmp_path, [other, SECRET])
    ns: dict[str, Any] = {}
    exec(snippet("python-verify"), ns)
    verify = ns["verify_mailgate_webhook"]
    assert verify(SECRET, req.headers, req.body)["subject"] == "Grüße aus Köln"
    assert verify(other, req.headers, req.body)["subject"] == "Grüße aus Köln"
    with pytest.raises(ValueError):
        verify(SECRET, req.headers, req.body + b" ")
    stale = dict(req.headers, **{"webhook-timestamp": "1000000000"})
    with pytest.raises(ValueError):
        verify(SECRET, stale, req.body)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_node_snippet_verifies_real_requests(tmp_path: Path) -> None:
    req = await signed_request(tmp_path, [SECRET])
    module = tmp_path / "verify.js"
    module.write_text(snippet("node-verify"))
    runner = (
        f"const {{ verifyMailgateWebhook }} = require({json.dumps(str(module))});"
        "const req = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const body = Buffer.from(req.body, 'base64');"
        "const out = [];"
        "out.push(verifyMailgateWebhook(req.secret, req.headers, body).subject);"
        "try { verifyMailgateWebhook(req.secret, req.headers, Buffer.concat([body, Buffer.from(' ')]));"
        " out.push('accepted tampered'); } catch (e) { out.push('rejected tampered'); }"
        "console.log(JSON.stringify(out));"
    )
    headers = {k.lower(): v for k, v in req.headers.items()}
    stdin = json.dumps(
        {"secret": SECRET, "headers": headers, "body": base64.b64encode(req.body).decode()}
    )
    result = subprocess.run(
        ["node", "-e", runner], input=stdin, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["Grüße aus Köln", "rejected tampered"]


def test_every_delivery_key_is_documented() -> None:
    text = DOC.read_text()
    for cls in (WebhookConfig, DeliveryConfig, ApiConfig):
        for f in dataclasses.fields(cls):
            if cls is ApiConfig and f.name in ("enabled",):
                continue
            assert re.search(rf"\b{f.name}\b", text), f"{cls.__name__}.{f.name} not in {DOC.name}"
