"""Helpers for in-process server tests: run a client against a fresh app, read an error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from saffron.search import World
from saffron.serve.app import create_app
from saffron.serve.engine import Engine
from saffron.serve.protocol import ServeSettings

Client = httpx.AsyncClient
T = TypeVar("T")


def call(
    world: World,
    body: Callable[[Client], Awaitable[T]],
    settings: ServeSettings | None = None,
    **engine: Any,
) -> T:
    """Run ``body`` against a fresh app on ``world`` (in process), then close its engine."""

    async def main() -> T:
        eng = Engine(world, **engine)
        app = create_app(eng, settings or ServeSettings())
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://serve") as c:
                return await body(c)
        finally:
            await eng.close()

    return asyncio.run(main())


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    """The OpenAI error object of ``resp``, after checking its status and exact shape."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in resp.text
    return dict(body["error"])
