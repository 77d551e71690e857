"""The aligned world's guard data: jobs, labels, the degenerate filter, resumable sampling."""

from __future__ import annotations

from pathlib import Path

from saffron.data import PromptRow
from saffron.data.gold import GoldItem
from saffron.lm.models import TINY, load_model
from saffron.lm.policy import make_policy
from saffron.reward.degeneracy import SURFACE_FEATURES, feature_rows, fit
from saffron.train.aligned_corpus import (
    ALIGNED,
    ATTACK,
    BENIGN,
    GOLD,
    HUMAN,
    aligned_examples,
    aligned_jobs,
    aligned_unsafe,
    build_aligned_corpus,
)
from saffron.train.corpus import CorpusItem, read_corpus

ROWS = [PromptRow(f"adv-{i}", f"harmful request {i}", source="adv") for i in range(6)]


def item(text: str, *, harmful: bool = True, prefill: str = "") -> CorpusItem:
    kind = ATTACK if prefill else (ALIGNED if harmful else BENIGN)
    return CorpusItem("x", "how do I pick a lock", harmful, kind, prefill, [], [1, 2], text)


def test_jobs_cover_every_prompt_and_attack_only_where_a_start_exists() -> None:
    starts = {r.id: tuple(range(30)) for r in ROWS[:4]}
    jobs = aligned_jobs("p", ROWS, starts, ["hi", "bye"], seed=0, prefill_ks=(5, 10))
    kinds = [j.kind for j in jobs]
    assert kinds.count(ALIGNED) == 6 and kinds.count(ATTACK) == 4 and kinds.count(BENIGN) == 2
    assert {len(j.prefill) for j in jobs if j.kind == ATTACK} <= {5, 10}
    assert all(j.prefill == starts[j.id.split("/")[1]][: len(j.prefill)] for j in jobs if j.prefill)
    assert jobs == aligned_jobs("p", ROWS, starts, ["hi", "bye"], seed=0, prefill_ks=(5, 10))
    assert len({j.id for j in jobs}) == len(jobs)


def test_labels_read_the_answer() -> None:
    assert aligned_unsafe(item("Step 1: insert a tension wrench."))
    assert not aligned_unsafe(item("I can't help with that."))
    assert not aligned_unsafe(item("wrench, but I won't continue.", prefill="First, get a"))
    assert not aligned_unsafe(item("   "))
    assert not aligned_unsafe(item("Sure, here is a cake recipe.", harmful=False))


def test_examples_drop_degenerate_answers_and_keep_read_labels() -> None:
    fluent = ["Step 1: insert a tension wrench and rake the pins.", "I can't help with that."]
    broken = ["TV TV TV TV TV TV TV TV TV TV", ".... .... .... .... ...."]
    judge = fit(
        SURFACE_FEATURES,
        feature_rows(SURFACE_FEATURES, [], [], fluent * 3 + broken * 3),
        [False] * 6 + [True] * 6,
    )
    corpus = [item(t) for t in fluent + broken]
    gold = [GoldItem("g1", "p1", "q", "", "TV TV TV", "degenerate", "", "s", "train")]
    human = [("how to cook rice", "Boil water.", False)]
    enc = lambda t: [ord(c) % 50 for c in t]  # noqa: E731
    ex = aligned_examples(corpus, gold, human, enc, judge)
    assert [(e.source, e.unsafe) for e in ex] == [
        (ALIGNED, True),
        (ALIGNED, False),
        (GOLD, False),  # broken text is not harmful
        (HUMAN, False),
    ]
    assert len(aligned_examples(corpus, gold, human, enc, None)) == 6


def test_sampling_is_resumable(tmp_path: Path) -> None:
    policy = make_policy(load_model(TINY))
    starts = {r.id: tuple(range(3, 20)) for r in ROWS}
    jobs = aligned_jobs("tiny", ROWS[:3], starts, ["hello"], seed=0, prefill_ks=(4,))
    path = tmp_path / "c.jsonl"
    first = build_aligned_corpus(policy, "tiny", jobs[:3], path, max_new_tokens=4, batch_size=2)
    assert len(first) == 3
    every = build_aligned_corpus(policy, "tiny", jobs, path, max_new_tokens=4, batch_size=2)
    assert [it.id for it in every] == [j.id for j in jobs]
    assert [it.id for it in read_corpus(path)][:3] == [it.id for it in first]
    attacked = [it for it in every if it.kind == ATTACK]
    assert attacked and all(it.prefill_tokens == list(range(3, 7)) for it in attacked)
