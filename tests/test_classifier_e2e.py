"""Label -> train -> activate -> route, through a real ``mailgate serve``.

Messages from ``fixtures/routing`` go in over SMTP; most are labelled with the CLI, some
through ``POST /v1/messages/{id}/label``; ``model train --from-store`` stores a version,
``model activate`` switches it on, and the running worker (no restart) routes the next
message by the model, with ``route.model`` and the reasons. ``replay --dry-run --model``
shows what a version would change before it is active, and ``rollback`` switches it off.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.server import MailgateServer

ROUTING = Path(__file__).resolve().parent.parent / "fixtures" / "routing"
TOKEN = "test-token-0123456789abcdef0123456789"
PER_QUEUE = 6
EXTRA = """
[classifier]
enabled = true
threshold = 0.3
fallback_queue = "triage"
min_examples = 3
"""


def _labelled() -> list[dict[str, Any]]:
    return [json.loads(x) for x in (ROUTING / "labels.jsonl").read_text().splitlines()]


def _post_label(srv: MailgateServer, msg_id: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{srv.api_base}/v1/messages/{msg_id}/label",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_label_train_activate_route(mailgate_server: Any) -> None:
    srv: MailgateServer = mailgate_server(extra_toml=EXTRA)
    items = _labelled()
    picked: list[dict[str, Any]] = []
    for queue in (
        "billing",
        "refunds",
        "shipping",
        "technical",
        "account",
        "security",
        "sales",
        "feedback",
    ):
        picked += [x for x in items if x["queue"] == queue][:PER_QUEUE]
    for item in picked:
        srv.send((ROUTING / item["path"]).read_bytes())
    rows = srv.wait_processed(len(picked), timeout=60)
    # before any model: the default queue, and no model in the route
    env0 = json.loads(rows[0]["envelope"])
    assert "model" not in env0["route"]
    by_subject = {json.loads(r["envelope"])["messageId"]: r["id"] for r in rows}

    api_labelled = 0
    for n, item in enumerate(picked):
        raw = (ROUTING / item["path"]).read_bytes().decode()
        mid = next(
            line.split(":", 1)[1].strip()
            for line in raw.splitlines()
            if line.startswith("Message-ID:")
        )
        msg_id = by_subject[mid]
        if n % 4 == 0:
            status, body = _post_label(srv, msg_id, {"queue": item["queue"], "tags": ["agent"]})
            assert status == 200, body
            assert body["queue"] == item["queue"] and body["labelledBy"].startswith("api:")
            api_labelled += 1
        else:
            out = srv.cli("messages", "label", msg_id, "--queue", item["queue"], "--actor", "lead")
            assert f"labelled {item['queue']}" in out.stdout.decode()
    assert api_labelled >= 8
    status, body = _post_label(srv, "msg_nope", {"queue": "billing"})
    assert status == 404
    status, body = _post_label(srv, rows[0]["id"], {"queue": ""})
    assert status == 400

    trained = json.loads(srv.cli("model", "train", "--from-store", "--json").stdout)
    assert trained["version"] == 1 and trained["examples"] == len(picked)
    assert set(trained["queues"]) == {x["queue"] for x in picked}
    assert 0.0 <= trained["heldOut"]["accuracy"] <= 1.0

    # what v1 would change, before it is active
    preview = json.loads(srv.cli("replay", "--dry-run", "--model", "1", "--json").stdout)
    assert preview["examined"] == len(picked) and preview["changed"] >= len(picked) // 2
    assert all("model" in m["changes"] for m in preview["messages"])

    assert "v1 is active" in srv.cli("model", "activate", "1").stdout.decode()
    listed = json.loads(srv.cli("model", "list", "--json").stdout)
    assert [m["active"] for m in listed] == [True]

    unseen = next(
        x for x in items if x["queue"] == "refunds" and x not in picked and "-en" in x["path"]
    )
    time.sleep(1.2)  # the worker looks at the active version at most once a second
    srv.send((ROUTING / unseen["path"]).read_bytes())
    rows = srv.wait_processed(len(picked) + 1, timeout=30)
    env = json.loads(rows[-1]["envelope"])
    model = env["route"]["model"]
    assert model["version"] == 1
    assert env["queue"] == (model["queue"] if model["accepted"] else "triage")
    assert model["queue"] == "refunds", env["route"]
    assert any(
        r.startswith("model v1:") or r.startswith("low confidence") for r in env["route"]["reasons"]
    )

    # rollback: no earlier version, so the model is switched off for the tenant
    assert "rules only" in srv.cli("model", "rollback").stdout.decode()
    assert json.loads(srv.cli("model", "list", "--json").stdout)[0]["active"] is False
