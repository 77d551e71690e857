"""OpenAI wire format ⇄ Saffron: a request body becomes a :class:`Plan` (method, policy input,
search config); an :class:`~saffron.serve.engine.Outcome` becomes a response object or stream
chunks.

Which model ids exist: one per search method the loaded models can run (``greedy``,
``sample``, ``best-of-n``, ``saffron``, …), optionally narrowed by the server's settings.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from saffron.errors import SaffronError
from saffron.search import METHODS, SearchConfig, World
from saffron.serve.engine import Outcome
from saffron.serve.errors import bad_request, model_not_found
from saffron.serve.prompts import chat_sequence, completion_sequence
from saffron.serve.schemas import ChatRequest, CompletionRequest
from saffron.types import TokenSequence


@dataclass(frozen=True)
class ServeSettings:
    """Server-wide limits and defaults; a request may lower or change them within the limits.

    ``api_key`` None: no authentication. ``methods`` empty: every method the world can run.
    ``min_tokens``: stop tokens are forbidden before this many new tokens (the paper's 16),
    capped at the request's ``max_tokens``.
    """

    api_key: str | None = None
    """The bearer key every request must carry (None: no authentication)."""
    max_body_bytes: int = 1 << 20
    """Largest request body; a larger one gets 413."""
    max_tokens_limit: int = 512
    """Largest ``max_tokens`` a request may ask for."""
    default_max_tokens: int = 64
    """``max_tokens`` of a request that gives none."""
    min_tokens: int = 16
    """Stop tokens are forbidden before this many new tokens (capped at ``max_tokens``)."""
    default_budget: int = 4
    """Search budget of a request that gives none."""
    max_budget: int = 32
    """Largest ``saffron.budget`` a request may ask for."""
    top_p: float = 0.8
    """Nucleus of a request that gives none."""
    temperature: float = 1.0
    """Temperature of a request that gives none."""
    methods: tuple[str, ...] = ()
    """Methods served as model ids (empty: every method the world can run)."""
    rule: tuple[tuple[str, Any], ...] = ()
    """The selection rule, as (SearchConfig field, value) pairs: ``logp_weight``,
    ``logp_floor``, ``reward_cap``, ``no_repeat_ngram`` go to the methods that rank children,
    ``gate`` and ``gate_steps`` to those that gate (empty: the paper's rule; ``saffron serve``
    gives the command line's)."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_tokens_limit", "default_max_tokens", "max_budget"):
            if getattr(self, name) < 1:
                raise SaffronError(f"{name.replace('_', '-')} must be ≥ 1")
        if not 1 <= self.default_budget <= self.max_budget:
            raise SaffronError("the default budget must be between 1 and the maximum budget")
        if self.default_max_tokens > self.max_tokens_limit:
            raise SaffronError("the default max tokens exceeds the max tokens limit")
        if self.api_key is not None and not self.api_key:
            raise SaffronError("the API key is empty")
        for m in self.methods:
            if m not in METHODS:
                raise SaffronError(f"unknown method {m!r}; known: {', '.join(sorted(METHODS))}")
        try:
            SearchConfig(**dict(self.rule))  # a bad value is refused at start, not per request
        except TypeError as err:
            raise SaffronError(f"the selection rule has an unknown field: {err}") from None


def model_ids(world: World, settings: ServeSettings) -> list[str]:
    """Methods the loaded models can run (and the settings allow), sorted."""
    names = settings.methods or tuple(METHODS)
    return sorted(
        n
        for n in names
        if not (METHODS[n].needs_guard and world.guard is None)
        and not (METHODS[n].needs_mrm and world.mrm is None)
    )


@dataclass(frozen=True)
class Plan:
    """What to run for one request. ``model`` is the id the client asked for."""

    model: str
    method: str
    seq: TokenSequence
    config: SearchConfig
    stream: bool
    include_usage: bool


def parse_body(
    raw: bytes, kind: type[ChatRequest] | type[CompletionRequest]
) -> ChatRequest | CompletionRequest:
    """The validated request, or ApiError 400 (malformed JSON, wrong or missing fields)."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"the body is not valid JSON: {err}", code="invalid_json") from err
    if not isinstance(obj, dict):
        raise bad_request("the body must be a JSON object", code="invalid_json")
    try:
        return kind.model_validate(obj)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
        raise bad_request(f"{where}: {first['msg']}", code=code, param=where) from err


def _method(req: ChatRequest | CompletionRequest, world: World, settings: ServeSettings) -> str:
    known = model_ids(world, settings)
    if req.model not in known:
        raise model_not_found(req.model, known)
    if req.temperature != 0:
        return req.model
    if req.model in ("greedy", "sample"):
        return "greedy"  # temperature 0: deterministic, as OpenAI defines it
    raise bad_request(
        f"temperature 0 is only defined for greedy and sample; {req.model!r} samples "
        "candidates and needs a temperature > 0",
        param="temperature",
    )


GATE_FIELDS = ("gate", "gate_steps")


def rule_for(method: str, settings: ServeSettings) -> dict[str, Any]:
    """The server's selection rule for ``method``: the fields it uses (see
    :attr:`ServeSettings.rule`), none for a method that ranks no children."""
    spec = METHODS[method]
    if not spec.ranks_children:
        return {}
    return {k: v for k, v in settings.rule if spec.gates or k not in GATE_FIELDS}


def search_config(
    req: ChatRequest | CompletionRequest, settings: ServeSettings, method: str = "greedy"
) -> SearchConfig:
    """The request's SearchConfig for ``method`` within the server's limits, under the
    server's selection rule; ApiError 400 otherwise."""
    bad = req.unsupported()
    if bad is not None:
        raise bad_request(
            f"{bad!r} is not supported by Saffron", code="unsupported_parameter", param=bad
        )
    if req.n not in (None, 1):
        raise bad_request(
            f"n = {req.n}: Saffron returns one answer per request; send n = 1",
            code="unsupported_parameter",
            param="n",
        )
    max_tokens = req.token_limit() or settings.default_max_tokens
    if max_tokens > settings.max_tokens_limit:
        raise bad_request(
            f"max_tokens is too large: {max_tokens}; this server allows at most "
            f"{settings.max_tokens_limit}",
            param="max_tokens",
        )
    ext = req.saffron
    budget = ext.budget or settings.default_budget
    if budget > settings.max_budget:
        raise bad_request(
            f"saffron.budget is too large: {budget}; this server allows at most "
            f"{settings.max_budget}",
            param="saffron.budget",
        )
    min_tokens = (
        ext.min_tokens if ext.min_tokens is not None else min(settings.min_tokens, max_tokens)
    )
    try:
        return SearchConfig(
            budget=budget,
            max_new_tokens=max_tokens,
            min_new_tokens=min_tokens,
            top_p=req.top_p if req.top_p is not None else settings.top_p,
            temperature=req.temperature or settings.temperature,
            seed=req.seed if req.seed is not None else 0,
            options=tuple(sorted(ext.options.items())),
            **rule_for(method, settings),
        )
    except SaffronError as err:
        raise bad_request(str(err)) from err


def plan(req: ChatRequest | CompletionRequest, world: World, settings: ServeSettings) -> Plan:
    """Validate ``req`` fully (model, limits, prompt) before anything is queued."""
    method = _method(req, world, settings)
    config = search_config(req, settings, method)
    chat = world.policy.chat
    if isinstance(req, ChatRequest):
        seq = chat_sequence(chat, req.messages, config.max_new_tokens)
    else:
        text = req.text()
        if text is None:
            raise bad_request(
                "send exactly one prompt string per request",
                code="unsupported_parameter",
                param="prompt",
            )
        seq = completion_sequence(chat, text, config.max_new_tokens)
    return Plan(req.model, method, seq, config, req.stream, req.include_usage())


# --- responses -------------------------------------------------------------------------------


def usage(outcome: Outcome, config: SearchConfig) -> dict[str, Any]:
    """OpenAI's token counts plus the ``saffron`` object (compute of the search only)."""
    r = outcome.result
    prompt, completion = len(r.sequence.context), len(r.generated)
    verdict = outcome.verdict
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "saffron": {
            "method": r.method,
            "budget": config.budget,
            "tflop": r.compute.tflop,
            "reward_calls": dict(r.reward_calls),
            "reward": r.reward,
            "guard": None
            if verdict is None
            else {"reward": verdict.reward, "verdict": "unsafe" if verdict.unsafe else "safe"},
            "finished": r.finished,
            "search_s": r.compute.wall_s,
            "queue_s": outcome.queue_s,
        },
    }


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def finish_reason(outcome: Outcome) -> str:
    """``stop`` when the answer ended with a stop token, else ``length``."""
    return "stop" if outcome.result.finished else "length"


def chat_response(p: Plan, outcome: Outcome, rid: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": outcome.result.text}
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": p.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(outcome),
                "logprobs": None,
            }
        ],
        "usage": usage(outcome, p.config),
    }


def completion_response(p: Plan, outcome: Outcome, rid: str) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": p.model,
        "choices": [
            {
                "index": 0,
                "text": outcome.result.text,
                "finish_reason": finish_reason(outcome),
                "logprobs": None,
            }
        ],
        "usage": usage(outcome, p.config),
    }


def _chunk(p: Plan, rid: str, chat: bool, piece: dict[str, Any] | None) -> dict[str, Any]:
    """One stream chunk; ``piece`` holds the choice's delta/text and finish_reason, or None
    for the closing usage chunk (no choices)."""
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": p.model,
        "choices": [] if piece is None else [{"index": 0, "logprobs": None, **piece}],
    }


def opening_chunk(p: Plan, rid: str, chat: bool) -> dict[str, Any]:
    """Sent as soon as the request is queued (chat: the assistant role, no content)."""
    piece = {"delta": {"role": "assistant", "content": ""}} if chat else {"text": ""}
    return _chunk(p, rid, chat, {**piece, "finish_reason": None})


def answer_chunks(p: Plan, outcome: Outcome, rid: str, chat: bool) -> list[dict[str, Any]]:
    """The decided answer as stream chunks: its text, the finish reason, then (when the
    client asked with ``stream_options.include_usage``) a chunk with the usage only."""
    text = outcome.result.text
    reason = finish_reason(outcome)
    pieces: list[dict[str, Any]]
    if chat:
        pieces = [
            {"delta": {"content": text}, "finish_reason": None},
            {"delta": {}, "finish_reason": reason},
        ]
    else:
        pieces = [{"text": text, "finish_reason": None}, {"text": "", "finish_reason": reason}]
    chunks = [_chunk(p, rid, chat, piece) for piece in pieces]
    if p.include_usage:
        chunks.append({**_chunk(p, rid, chat, None), "usage": usage(outcome, p.config)})
    return chunks


def sse(obj: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` (or ``data: [DONE]``) and a blank line."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()
