"""The FastAPI app: OpenAI's chat and completion endpoints, models, health and metrics.

:func:`create_app` takes an already built :class:`~saffron.serve.engine.Engine` (models
loaded), so tests build one on tiny models and the CLI on real ones. Every error leaves in
OpenAI's error shape (:mod:`saffron.serve.errors`).

Streaming: the response starts at once with the assistant-role chunk; the answer is sent when
the search has decided it (for every method, greedy included), then the finish chunk, the usage
chunk if asked for, and ``data: [DONE]``. An error after the stream started is sent as one
``data: {"error": …}`` event.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from saffron.errors import SaffronError
from saffron.serve.engine import Engine, Job, Outcome, QueueFull
from saffron.serve.errors import (
    ApiError,
    bad_request,
    error_response,
    internal_error,
    model_not_found,
)
from saffron.serve.metrics import CONTENT_TYPE, Metrics
from saffron.serve.protocol import (
    Plan,
    ServeSettings,
    answer_chunks,
    chat_response,
    completion_response,
    model_ids,
    new_id,
    opening_chunk,
    parse_body,
    plan,
    sse,
)
from saffron.serve.schemas import ChatRequest, CompletionRequest

log = logging.getLogger("saffron.serve")
POLL_S = 0.1  # how often a waiting request checks whether its client is still there
OPEN_PATHS = ("/health",)
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class Gate:
    """ASGI middleware: the API key check (all paths but /health) and per-status counts."""

    def __init__(self, app: Any, api_key: str | None, metrics: Metrics) -> None:
        self.app, self.api_key, self.metrics = app, api_key, metrics

    def refusal(self, scope: Scope) -> ApiError | None:
        """401 when a key is configured and the request does not carry it."""
        if self.api_key is None or scope["path"] in OPEN_PATHS:
            return None
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"")
        if not given:
            msg = "missing API key: send the header 'Authorization: Bearer <key>'"
        elif hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
            return None
        else:
            msg = "incorrect API key provided"
        return ApiError(401, msg, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            refusal = self.refusal(scope)
            if refusal is not None:
                await error_response(refusal)(scope, receive, counted)
            else:
                await self.app(scope, receive, counted)
        finally:
            path = scope["path"] if scope["path"] in ROUTES else "other"
            self.metrics.http.labels(path, str(status[0])).inc()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or ApiError 400 ``request_too_large`` past ``limit`` bytes (checked on the
    declared length first, then while reading, so a large body is never held in memory)."""
    too_large = bad_request(
        f"the request body exceeds this server's limit of {limit} bytes", code="request_too_large"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def wait_for(engine: Engine, job: Job, request: Request) -> Outcome:
    """The job's outcome; cancels it (and raises ClientGone) when the client disconnects.

    ApiError 400 for a request the method refuses at run time, 500 for an internal fault.
    """
    try:
        while not job.future.done():
            await asyncio.wait({job.future}, timeout=POLL_S)
            if not job.future.done() and await request.is_disconnected():
                raise ClientGone()
        if job.future.cancelled():
            raise ClientGone()
        err = job.future.exception()
        if isinstance(err, SaffronError):
            raise bad_request(str(err))
        if err is not None:
            raise internal_error()
        return job.future.result()
    finally:
        if not job.future.done():
            engine.cancel(job)


def submit(engine: Engine, p: Plan) -> Job:
    """Queue the plan's job; ApiError 429 with Retry-After when the queue is full."""
    try:
        return engine.submit(p.method, p.seq, p.config)
    except QueueFull as full:
        raise ApiError(
            429,
            str(full),
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(full.retry_after)},
        ) from None


class Server:
    """The request handlers of one app: the engine, its settings, its metrics."""

    def __init__(self, engine: Engine, settings: ServeSettings) -> None:
        self.engine, self.settings = engine, settings
        self.metrics = Metrics(lambda: engine.depth, lambda: engine.running)

    async def complete(
        self, request: Request, kind: type[ChatRequest] | type[CompletionRequest]
    ) -> Response:
        """Validate, queue, wait, answer (or stream). ApiError for every refusal."""
        t0 = time.perf_counter()
        req = parse_body(await read_body(request, self.settings.max_body_bytes), kind)
        p = plan(req, self.engine.world, self.settings)
        job = submit(self.engine, p)
        chat = kind is ChatRequest
        if p.stream:
            events = self.stream(request, p, job, chat, t0)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        try:
            outcome = await wait_for(self.engine, job, request)
        except ClientGone:
            self.metrics.completions.labels(p.model, "cancelled").inc()
            return Response(status_code=499)  # nobody reads it; logs show the client left
        except ApiError:
            self.metrics.completions.labels(p.model, "error").inc()
            raise
        self.metrics.answered(p.model, outcome, _since(t0))
        if chat:
            return JSONResponse(chat_response(p, outcome, new_id("chatcmpl")))
        return JSONResponse(completion_response(p, outcome, new_id("cmpl")))

    async def stream(
        self, request: Request, p: Plan, job: Job, chat: bool, t0: float
    ) -> AsyncIterator[bytes]:
        """SSE events of one request; a disconnect at any point cancels the job."""
        rid = new_id("chatcmpl" if chat else "cmpl")
        outcome_label = "cancelled"
        try:
            yield sse(opening_chunk(p, rid, chat))
            try:
                outcome = await wait_for(self.engine, job, request)
            except ClientGone:
                return
            except ApiError as err:
                outcome_label = "error"
                yield sse(err.body())
                return
            for chunk in answer_chunks(p, outcome, rid, chat):
                yield sse(chunk)
            yield sse("[DONE]")
            outcome_label = "ok"
            self.metrics.answered(p.model, outcome, _since(t0))
        finally:
            if not job.future.done():
                self.engine.cancel(job)
            if outcome_label != "ok":
                self.metrics.completions.labels(p.model, outcome_label).inc()

    def models(self) -> dict[str, Any]:
        ids = model_ids(self.engine.world, self.settings)
        return {"object": "list", "data": [_model_card(m) for m in ids]}

    def model(self, model_id: str) -> dict[str, Any]:
        ids = model_ids(self.engine.world, self.settings)
        if model_id not in ids:
            raise model_not_found(model_id, ids)
        return _model_card(model_id)

    def health(self) -> dict[str, Any]:
        world = self.engine.world
        return {
            "status": "ok",
            "queue_depth": self.engine.depth,
            "running": self.engine.running,
            "policy": world.policy.name,
            "guard": getattr(world.guard, "name", None),
            "mrm": getattr(world.mrm, "name", None),
        }


STARTED = int(time.time())


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": STARTED, "owned_by": "saffron"}


def _since(t0: float) -> float:
    return time.perf_counter() - t0


def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    err = ApiError(exc.status_code, str(exc.detail), code=codes.get(exc.status_code))
    return error_response(err)


def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


def _internal(_: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return error_response(internal_error())


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app around ``engine``; the engine is closed when the app shuts down."""
    settings = settings or ServeSettings()
    server = Server(engine, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.close()

    app = FastAPI(
        title="saffron", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.server = server
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal)
    app.add_middleware(Gate, api_key=settings.api_key, metrics=server.metrics)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await server.complete(request, ChatRequest)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await server.complete(request, CompletionRequest)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return server.models()

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        return server.model(model_id)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return server.health()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    return app
