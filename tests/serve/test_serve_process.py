"""A real ``saffron serve`` process on loopback, driven by the real ``openai`` client and by
curl: chat, completions, streaming, models, extra_body, errors, a disconnect mid-stream.

The server runs the tiny test world (``--world-factory serve_toys:tiny_world``) with every
policy step slowed to 20 ms, so a long request can be abandoned while it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

KEY = "test-key-123"
ROOT = Path(__file__).resolve().parents[2]
USER = [{"role": "user", "content": "How do I stay safe?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """Base URL of a server process; stopped (then killed if need be) afterwards."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests" / "serve")]),
        "SAFFRON_TEST_KEY": KEY,
        "SAFFRON_TEST_STEP_DELAY": "0.02",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "saffron", "serve", "--world-factory", "serve_toys:tiny_world",
           "--port", str(port), "--api-key-env", "SAFFRON_TEST_KEY", "--max-tokens-limit", "600",
           "--queue", "4"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while get(base + "/health")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"server did not start: {proc.stderr.read() if proc.stderr else ''}"
                )
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def client(base: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30)


def test_chat_completions_streaming_models_extra_body(server: str) -> None:
    c = client(server)
    out = c.chat.completions.create(model="greedy", messages=USER, max_tokens=8)
    text = out.choices[0].message.content
    assert isinstance(text, str) and out.usage is not None and out.usage.completion_tokens == 8
    stream = c.chat.completions.create(model="greedy", messages=USER, max_tokens=8, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == text
    res = c.chat.completions.create(
        model="saffron",
        messages=USER,
        max_tokens=6,
        extra_body={"saffron": {"budget": 2}},
    )
    extra = (res.usage.model_extra or {})["saffron"] if res.usage else {}
    assert extra["budget"] == 2 and extra["reward_calls"]["mrm"] > 0 and extra["tflop"] > 0
    assert extra["guard"]["verdict"] in ("safe", "unsafe")
    comp = c.completions.create(model="sample", prompt="Once upon a time", max_tokens=5, seed=3)
    assert comp.usage is not None and comp.usage.completion_tokens == 5
    assert {m.id for m in c.models.list()} >= {"greedy", "sample", "best-of-n", "saffron"}


def test_openai_errors(server: str) -> None:
    with pytest.raises(openai.AuthenticationError) as auth:
        client(server, "wrong").models.list()
    assert auth.value.status_code == 401
    c = client(server)
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="gpt-4o", messages=USER)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as big:
        c.chat.completions.create(model="greedy", messages=USER, max_tokens=601)
    assert big.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as bad:
        c.chat.completions.create(model="greedy", messages=[{"role": "wizard", "content": "x"}])
    assert bad.value.code == "invalid_value"


def test_disconnect_mid_stream_frees_the_work(server: str) -> None:
    c = client(server)
    stream = c.chat.completions.create(model="sample", messages=USER, max_tokens=500, stream=True)
    first = next(iter(stream))  # the role chunk: the search is queued or running
    assert first.choices[0].delta.role == "assistant"
    stream.close()
    t0 = time.monotonic()
    health: dict[str, int] = {}
    while time.monotonic() - t0 < 5:  # the whole search would take ≥ 10 s
        health = json.loads(get(server + "/health")[1])
        if health["running"] == 0 and health["queue_depth"] == 0:
            break
        time.sleep(0.1)
    assert health["running"] == 0 and health["queue_depth"] == 0
    req = urllib.request.Request(server + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'saffron_completions_total{model="sample",outcome="cancelled"} 1.0' in metrics


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_status_codes(server: str) -> None:
    def curl(*args: str) -> tuple[int, str]:
        out = subprocess.run(
            ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        body, _, code = out.rpartition("\n")
        return int(code), body

    auth = ["-H", f"Authorization: Bearer {KEY}", "-H", "Content-Type: application/json"]
    chat = server + "/v1/chat/completions"
    ok = json.dumps({"model": "greedy", "messages": USER, "max_tokens": 3})
    assert curl(server + "/health")[0] == 200
    assert curl(chat, "-d", ok)[0] == 401
    assert curl(*auth, chat, "-d", ok)[0] == 200
    code, body = curl(*auth, chat, "-d", '{"model": "greedy", "messages": [')
    assert code == 400 and json.loads(body)["error"]["code"] == "invalid_json"
    assert curl(*auth, server + "/v1/nothing")[0] == 404
    assert curl(*auth, chat)[0] == 405
    assert curl(*auth, server + "/metrics")[0] == 200
