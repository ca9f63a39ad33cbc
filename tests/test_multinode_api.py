"""Two nodes on one PostgreSQL database: the API and the CLI work from either (issue 13).

A message sent to node A is listed by node B's polling API, its signed attachment URL (signed
by B with the key in the database) is good on A and on B — B has no blob of it on its disk and
re-derives it from the raw message in the database — and the operator CLI of node B sees it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tests.support.multinode import postgres_node_toml
from tests.support.postgres import PgCluster
from tests.support.server import MailgateServer
from tests.test_delivery_e2e import API_TOKEN, message_with_attachment


def node(tmp_path: Path, name: str, dsn: str) -> MailgateServer:
    root = tmp_path / name
    root.mkdir()
    text = postgres_node_toml(root, name)
    return MailgateServer(root, config_text=text, env={"MAILGATE_STORE_DSN": dsn})


async def test_api_attachments_and_cli_from_either_node(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    dsn = pg_cluster.create_database()
    a, b = node(tmp_path, "mxa", dsn), node(tmp_path, "mxb", dsn)
    await asyncio.to_thread(a.start)
    await asyncio.to_thread(b.start)
    try:
        pdf = b"%PDF-1.4\n" + bytes(range(256)) * 8
        reply = await asyncio.to_thread(a.send, message_with_attachment(pdf))
        msg_id = reply.rsplit(" ", 1)[-1].strip()
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            listed: list[dict[str, Any]] = []
            for _ in range(200):  # bounded: processed within a few hundred ms
                async with http.get(f"{b.api_base}/v1/messages", headers=auth) as r:
                    assert r.status == 200
                    listed = (await r.json())["data"]
                if listed:
                    break
                await asyncio.sleep(0.05)
            assert [m["id"] for m in listed] == [msg_id]
            async with http.get(f"{b.api_base}/v1/messages/{msg_id}", headers=auth) as r:
                detail = await r.json()
            atts = detail["envelope"]["attachments"]
            (att,) = [x for x in atts if x.get("filename") == "invoice.pdf"]
            parts = urlsplit(att["url"])
            path = f"{parts.path}?{parts.query}"
            for srv in (a, b):  # the local blob dir is only a cache: the database has the raw
                shutil.rmtree(srv.data_dir / "attachments", ignore_errors=True)
            for srv in (b, a):  # signed by b; good on both nodes
                async with http.get(srv.api_base + path) as r:
                    assert r.status == 200, await r.text()
                    assert await r.read() == pdf
            async with http.get(a.api_base + path.replace("sig=", "sig=x")) as r:
                assert r.status == 403
            async with http.post(f"{a.api_base}/v1/messages/{msg_id}/ack", headers=auth) as r:
                assert r.status == 200
            async with http.get(f"{b.api_base}/v1/messages", headers=auth) as r:
                assert (await r.json())["data"] == []  # acked on A: gone on B too
        shown = json.loads(b.cli("messages", "show", msg_id, "--json").stdout)
        assert shown["id"] == msg_id
        assert shown["subject"] == "Invoice question"  # the envelope: processed
        for args in (("quarantine", "list"), ("dlq", "list"), ("db", "status")):
            b.cli(*args)
    finally:
        await asyncio.to_thread(a.stop)
        await asyncio.to_thread(b.stop)
