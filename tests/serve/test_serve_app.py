"""The app in process (httpx over ASGI) on tiny models: answers, formats, every bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from serve_client import Client, call, error_of

from saffron.errors import SaffronError
from saffron.search import SearchConfig, World, run_search
from saffron.serve.protocol import ServeSettings

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "How do I stay safe?"}]


def post(world: World, path: str, body: Any, **kw: Any) -> httpx.Response:
    async def go(c: Client) -> httpx.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await c.post(path, content=data, headers=kw.pop("headers", {}))

    return call(world, go, **kw)


def test_chat_greedy_is_run_search_greedy(world: World) -> None:
    resp = post(world, CHAT, {"model": "greedy", "messages": USER, "max_tokens": 12})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    seq = world.policy.chat.sequence("How do I stay safe?")
    ref = run_search("greedy", world, seq, SearchConfig(max_new_tokens=12, min_new_tokens=12))
    assert out["object"] == "chat.completion" and out["model"] == "greedy"
    (choice,) = out["choices"]
    assert choice["message"] == {"role": "assistant", "content": ref.text}
    assert choice["finish_reason"] == "length"
    usage = out["usage"]
    assert usage["prompt_tokens"] == len(seq) and usage["completion_tokens"] == 12
    assert usage["total_tokens"] == len(seq) + 12
    extra = usage["saffron"]
    assert extra["method"] == "greedy" and extra["tflop"] > 0 and extra["reward"] is None
    assert extra["guard"]["verdict"] in ("safe", "unsafe")
    assert (extra["guard"]["reward"] < 0) == (extra["guard"]["verdict"] == "unsafe")


def test_saffron_budget_and_options_from_the_extension(world: World) -> None:
    ext = {"budget": 2, "options": {"conservative": False}, "min_tokens": 4}
    body = {"model": "saffron", "messages": USER, "max_tokens": 8, "saffron": ext}
    extra = post(world, CHAT, body).json()["usage"]["saffron"]
    assert extra["method"] == "saffron" and extra["budget"] == 2
    assert extra["reward_calls"]["mrm"] > 0 and isinstance(extra["reward"], float)


def test_completions_continue_raw_text(world: World) -> None:
    body = {"model": "greedy", "prompt": "Once upon a time", "max_tokens": 6}
    out = post(world, "/v1/completions", body).json()
    assert out["object"] == "text_completion"
    assert out["usage"]["prompt_tokens"] == len(world.policy.chat.encode("Once upon a time"))
    assert out["usage"]["completion_tokens"] == 6
    assert isinstance(out["choices"][0]["text"], str)


def test_assistant_prefill_is_continued_not_returned(world: World) -> None:
    msgs = [*USER, {"role": "assistant", "content": "Sure"}]
    out = post(world, CHAT, {"model": "greedy", "messages": msgs, "max_tokens": 5}).json()
    seq = world.policy.chat.sequence("How do I stay safe?", "Sure")
    ref = run_search("greedy", world, seq, SearchConfig(max_new_tokens=5, min_new_tokens=5))
    assert out["choices"][0]["message"]["content"] == ref.text
    assert out["usage"]["prompt_tokens"] == len(seq)  # the prefill counts as input


def test_stream_sends_role_answer_finish_usage_done(world: World) -> None:
    body = {"model": "greedy", "messages": USER, "max_tokens": 7, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    resp = post(world, CHAT, body)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = [e.removeprefix("data: ") for e in resp.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    plain = post(world, CHAT, {**body, "stream": False}).json()
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 7


def test_models_health_metrics(world: World) -> None:
    async def go(c: Client) -> list[httpx.Response]:
        await c.post(CHAT, json={"model": "greedy", "messages": USER, "max_tokens": 3})
        paths = ("/v1/models", "/v1/models/saffron", "/v1/models/gpt-4", "/health", "/metrics")
        return [await c.get(p) for p in paths]

    models, one, missing, health, metrics = call(world, go)
    ids = {m["id"] for m in models.json()["data"]}
    assert {"greedy", "sample", "best-of-n", "rejection", "beam", "mcts", "saffron"} == ids
    assert one.json()["id"] == "saffron" and one.json()["object"] == "model"
    assert error_of(missing, 404)["code"] == "model_not_found"
    assert health.json()["status"] == "ok" and health.json()["queue_depth"] == 0
    text = metrics.text
    assert 'saffron_http_requests_total{path="/v1/chat/completions",status="200"} 1.0' in text
    assert 'saffron_completions_total{model="greedy",outcome="ok"} 1.0' in text
    assert 'saffron_tokens_total{kind="completion"} 3.0' in text
    assert 'saffron_request_latency_seconds_count{model="greedy"} 1.0' in text
    assert "saffron_queue_depth 0.0" in text and "saffron_tflop_total" in text


def test_methods_setting_narrows_the_models(world: World) -> None:
    settings = ServeSettings(methods=("greedy", "saffron"))
    resp = post(world, CHAT, {"model": "beam", "messages": USER}, settings=settings)
    err = error_of(resp, 404)
    assert err["code"] == "model_not_found" and "greedy, saffron" in err["message"]


RULE = (("logp_floor", 4.0), ("no_repeat_ngram", 2), ("gate", 0.0), ("gate_steps", 2))


@pytest.mark.parametrize("method", ["saffron", "best-of-n"])
def test_the_server_rule_reaches_each_method_that_uses_it(world: World, method: str) -> None:
    """With a rule, saffron answers as run_search does under the whole rule; best-of-n, which
    ranks no children, answers as under the paper's."""
    body = {"model": method, "messages": USER, "max_tokens": 10, "saffron": {"budget": 2}}
    out = post(world, CHAT, body, settings=ServeSettings(rule=RULE)).json()
    seq = world.policy.chat.sequence("How do I stay safe?")
    rule = dict(RULE) if method == "saffron" else {}
    cfg = SearchConfig(budget=2, max_new_tokens=10, min_new_tokens=10, **rule)  # type: ignore[arg-type]
    for b in world.backends().values():
        b.clear()
    assert out["choices"][0]["message"]["content"] == run_search(method, world, seq, cfg).text


def test_a_bad_server_rule_is_refused_at_start() -> None:
    with pytest.raises(SaffronError) as err:
        ServeSettings(rule=(("gate", float("nan")),))
    assert str(err.value) == "gate must be a finite number (or unset), got nan"
    with pytest.raises(SaffronError, match="the selection rule has an unknown field"):
        ServeSettings(rule=(("beta", 1.0),))


LONG = "word " * 400
BAD: list[tuple[str, Any, int, str, str | None]] = [
    ("malformed json", b'{"model": "greedy", "messages": [', 400, "invalid_json", None),
    ("not an object", [1, 2], 400, "invalid_json", None),
    ("no messages", {"model": "greedy"}, 400, "missing_required_parameter", "messages"),
    ("bad role", {"model": "greedy", "messages": [{"role": "wizard", "content": "x"}]},
     400, "invalid_value", "messages.0.role"),
    ("unknown model", {"model": "gpt-4o", "messages": USER}, 404, "model_not_found", "model"),
    ("max_tokens over limit", {"model": "greedy", "messages": USER, "max_tokens": 513},
     400, "invalid_value", "max_tokens"),
    ("n > 1", {"model": "greedy", "messages": USER, "n": 2}, 400, "unsupported_parameter", "n"),
    ("tools", {"model": "greedy", "messages": USER, "tools": [{"type": "function"}]},
     400, "unsupported_parameter", "tools"),
    ("budget over limit", {"model": "saffron", "messages": USER, "saffron": {"budget": 33}},
     400, "invalid_value", "saffron.budget"),
    ("unknown extension key", {"model": "saffron", "messages": USER, "saffron": {"bugdet": 2}},
     400, "invalid_value", "saffron.bugdet"),
    ("empty prompt", {"model": "greedy", "messages": [{"role": "user", "content": " "}]},
     400, "invalid_value", "messages"),
    ("ends with system", {"model": "greedy", "messages": [{"role": "system", "content": "x"}]},
     400, "invalid_value", "messages"),
    ("two users in a row", {"model": "greedy", "messages": [*USER, *USER]},
     400, "invalid_value", "messages"),
    ("temperature 0 for a search", {"model": "saffron", "messages": USER, "temperature": 0},
     400, "invalid_value", "temperature"),
    ("temperature above 2", {"model": "sample", "messages": USER, "temperature": 3},
     400, "invalid_value", "temperature"),
    ("too long for the context", {"model": "greedy", "messages": [{"role": "user",
     "content": LONG * 2}]}, 400, "context_length_exceeded", "messages"),
    ("bad method option", {"model": "saffron", "messages": USER, "max_tokens": 4,
     "saffron": {"options": {"conservative": "maybe"}}}, 400, "invalid_value", None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "body", "status", "code", "param"), BAD, ids=[b[0] for b in BAD])
def test_bad_chat_input(
    world: World, name: str, body: Any, status: int, code: str, param: str | None
) -> None:
    err = error_of(post(world, CHAT, body), status)
    assert err["type"] == "invalid_request_error"
    assert (err["code"], err["param"]) == (code, param), err


def test_bad_completion_input(world: World) -> None:
    two = {"model": "greedy", "prompt": ["a", "b"]}
    assert error_of(post(world, "/v1/completions", two), 400)["code"] == "unsupported_parameter"
    empty = {"model": "greedy", "prompt": ""}
    assert error_of(post(world, "/v1/completions", empty), 400)["param"] == "prompt"


def test_request_size_limit(world: World) -> None:
    settings = ServeSettings(max_body_bytes=1000)
    body = {"model": "greedy", "messages": [{"role": "user", "content": "x" * 2000}]}
    err = error_of(post(world, CHAT, body, settings=settings), 400)
    assert err["code"] == "request_too_large" and "1000 bytes" in err["message"]


def test_api_key(world: World) -> None:
    settings = ServeSettings(api_key="sekrit")
    body = {"model": "greedy", "messages": USER, "max_tokens": 2}

    async def go(c: Client) -> list[httpx.Response]:
        return [
            await c.post(CHAT, json=body),
            await c.post(CHAT, json=body, headers={"Authorization": "Bearer wrong"}),
            await c.get("/v1/models", headers={"Authorization": "sekrit"}),
            await c.get("/metrics"),
            await c.post(CHAT, json=body, headers={"Authorization": "Bearer sekrit"}),
            await c.get("/health"),
        ]

    missing, wrong, no_scheme, metrics, ok, health = call(world, go, settings=settings)
    for resp in (missing, wrong, no_scheme, metrics):
        err = error_of(resp, 401)
        assert err["code"] == "invalid_api_key" and resp.headers["www-authenticate"] == "Bearer"
    assert "missing" in error_of(missing, 401)["message"]
    assert ok.status_code == 200 and health.status_code == 200


def test_unknown_route_and_method(world: World) -> None:
    async def go(c: Client) -> list[httpx.Response]:
        return [await c.get("/v1/engines"), await c.get(CHAT)]

    nowhere, wrong_method = call(world, go)
    assert error_of(nowhere, 404)["code"] == "not_found"
    assert error_of(wrong_method, 405)["code"] == "method_not_allowed"


def test_full_queue_answers_429_with_retry_after(world: World, slow: Any) -> None:
    body = {"model": "sample", "messages": USER, "max_tokens": 8}

    async def go(c: Client) -> list[httpx.Response]:
        return list(await asyncio.gather(*(c.post(CHAT, json=body) for _ in range(4))))

    resps = call(world, go, queue_size=1, max_batch=1)
    codes = sorted(r.status_code for r in resps)
    assert codes[0] == 200 and codes[-1] == 429, codes
    for r in resps:
        if r.status_code == 429:
            err = error_of(r, 429)
            assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
            assert int(r.headers["retry-after"]) >= 1


def test_greedy_requests_waiting_together_share_a_batch(world: World, slow: Any) -> None:
    prompts = ["How do I stay safe?", "Tell me a story.", "What is 2+2?"]

    async def go(c: Client) -> list[httpx.Response]:
        reqs = [
            c.post(CHAT, json={"model": "greedy", "max_tokens": 6,
                               "messages": [{"role": "user", "content": p}]})
            for p in prompts
        ]  # fmt: skip
        return list(await asyncio.gather(*reqs))

    resps = call(world, go, max_batch=4)
    # all three were queued before the worker took any: one batch, one forward per step
    assert slow.steps == 6
    cfg = SearchConfig(max_new_tokens=6, min_new_tokens=6)
    for p, r in zip(prompts, resps, strict=True):
        ref = run_search("greedy", world, world.policy.chat.sequence(p), cfg)
        assert r.json()["choices"][0]["message"]["content"] == ref.text
        assert r.json()["usage"]["saffron"]["tflop"] > 0
