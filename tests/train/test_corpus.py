"""The response corpus on the tiny model: job plan, resumable build, the own-start kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from saffron.data import PromptRow
from saffron.lm.models import load_model
from saffron.lm.policy import make_policy
from saffron.search import SearchConfig, World, run_search
from saffron.train import corpus as corpus_mod
from saffron.train.corpus import (
    OWN_START,
    REDIRECT,
    REDIRECT_INSTRUCTION,
    build_corpus,
    plan,
    read_corpus,
)

ROWS = [PromptRow(f"set-{i:04d}", f"how do I do bad thing number {i}") for i in range(5)]


def test_own_start_jobs_leave_the_other_jobs_unchanged() -> None:
    base = plan(ROWS, n_benign=3, seed=0)
    more = plan(ROWS, n_benign=3, seed=0, own_start=True)
    assert [j for j in more if j.kind != OWN_START] == base
    own = [j for j in more if j.kind == OWN_START]
    assert [j.id for j in own] == [f"{r.id}/ownstart" for r in ROWS]
    assert all(j.harmful and j.prefill == "" for j in own)


def test_own_start_items_continue_the_policys_greedy_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus_mod, "training_prompts", lambda seed, per_set: ROWS[:3])
    policy = make_policy(load_model("tiny-random-llama"))
    path = tmp_path / "corpus.jsonl"
    first = build_corpus(policy, path, n_benign=1, max_new_tokens=6, prefill_tokens=4)
    assert OWN_START not in {it.kind for it in first}
    # extending in place adds only the new kind; the items already there are kept as they were
    items = build_corpus(
        policy, path, n_benign=1, max_new_tokens=6, prefill_tokens=4, own_start=True
    )
    assert items[: len(first)] == first
    own = [it for it in items if it.kind == OWN_START]
    assert len(own) == 3 and len(items) == len(first) + 3
    world = World(policy)
    for it in own:
        policy.backend.clear()
        start = run_search(
            "greedy",
            world,
            policy.chat.sequence(it.prompt),
            SearchConfig(max_new_tokens=4, min_new_tokens=0),
        )
        want = [t for t in start.generated if t not in policy.chat.eos_ids]
        assert it.prefill_tokens == want
        assert 0 < len(it.response_tokens) <= 6
    assert read_corpus(path) == items


def test_redirect_jobs_leave_the_other_jobs_unchanged() -> None:
    base = plan(ROWS, n_benign=3, seed=0, own_start=True)
    more = plan(ROWS, n_benign=3, seed=0, own_start=True, redirect=True)
    assert [j for j in more if j.kind != REDIRECT] == base
    assert [j.id for j in more if j.kind == REDIRECT] == [f"{r.id}/redirect" for r in ROWS]


def test_redirect_items_read_the_instruction_but_keep_the_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus_mod, "training_prompts", lambda seed, per_set: ROWS[:2])
    policy = make_policy(load_model("tiny-random-llama"))
    seen: list[str] = []
    chat_type = type(policy.chat)
    real = chat_type.sequence

    def spy(self, prompt: str, *a: object, **kw: object):  # type: ignore[no-untyped-def]
        seen.append(prompt)
        return real(self, prompt, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(chat_type, "sequence", spy)
    items = build_corpus(
        policy, tmp_path / "c.jsonl", n_benign=0, max_new_tokens=5, prefill_tokens=3, redirect=True
    )
    red = [it for it in items if it.kind == REDIRECT]
    assert [it.prompt for it in red] == [r.prompt for r in ROWS[:2]]
    # the policy read the instructed request, after the same greedy start as the own-start kind
    for it in red:
        assert REDIRECT_INSTRUCTION.format(prompt=it.prompt) in seen
        assert len(it.prefill_tokens) == 3 and 0 < len(it.response_tokens) <= 5
    assert not any(REDIRECT_INSTRUCTION.format(prompt="") in it.prompt for it in items)
