"""A real HTTP receiver on 127.0.0.1 (ephemeral port) for webhook tests; reusable by any test.

It records every request (method, path, headers, exact body bytes, arrival time) and answers
from a programmable script: a queue of responses (status, headers such as ``Retry-After``,
body, delay before answering), then a default. It can go *down* (the port stops listening, so
clients get connection refused) and come back *up* on the same port.

    async with HttpReceiver() as rx:
        rx.script(Reply(500), Reply(429, headers={"Retry-After": "1"}))  # then 200s
        ... point a webhook at rx.url("/hook") ...
        await rx.wait_for(3)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (simulate a slow receiver)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival
    status: int  # what the receiver answered

    def json(self) -> Any:
        import json

        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


Handler = Callable[[web.Request, bytes], Awaitable[Reply | None]]


class HttpReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[Received] = []
        self.default = Reply(200)
        self.handler: Handler | None = None  # custom logic; None falls back to the script
        self._script: list[Reply] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.inflight = 0
        self.max_inflight = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> HttpReceiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await self.up()
        return self

    async def up(self) -> None:
        """Listen (again) on the same port."""
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def down(self) -> None:
        """Stop listening: new connections are refused until ``up()``."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def stop(self) -> None:
        await self.down()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HttpReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ programming

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, then with ``default``."""
        self._script.extend(replies)

    # ------------------------------------------------------------------ observing

    async def wait_for(
        self,
        count: int,
        *,
        timeout: float = 10.0,
        where: Callable[[Received], bool] | None = None,
    ) -> list[Received]:
        """Wait until ``count`` recorded requests (matching ``where``) exist; bounded."""
        deadline = time.monotonic() + timeout
        while True:
            got = [r for r in self.requests if where is None or where(r)]
            if len(got) >= count:
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"expected {count} requests, got {len(got)}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass

    def successful(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    # ------------------------------------------------------------------ serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            reply: Reply | None = None
            if self.handler is not None:
                reply = await self.handler(request, body)
            if reply is None:
                reply = self._script.pop(0) if self._script else self.default
            if reply.delay:
                await asyncio.sleep(reply.delay)
        finally:
            self.inflight -= 1
        self.requests.append(
            Received(
                method=request.method,
                path=request.path_qs,
                headers=dict(request.headers),
                body=body,
                at=time.time(),
                status=reply.status,
            )
        )
        self._changed.set()
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)
