"""The suffix-guard accounting model: a readout guard's rewards, billed as a guard that needs
its instruction suffix after every scored prefix (the paper's Llama Guard cost)."""

from __future__ import annotations

import pytest
import torch
from test_guard import seq, suffix_guard, tiny_loaded

from saffron.errors import SaffronError
from saffron.lm.backend import TrieBackend
from saffron.lm.models import byte_tokenizer, load_model
from saffron.lm.policy import make_policy
from saffron.reward.costing import DEFAULT_SUFFIX_TOKENS, SuffixCosted, parse_guard_cost
from saffron.reward.guard import ReadoutGuard
from saffron.search import SearchConfig, World, run_search
from saffron.search.scheduler import Scheduler


def readout(seed: int = 3) -> ReadoutGuard:
    loaded = tiny_loaded(seed)
    return ReadoutGuard(
        TrieBackend(loaded),
        name="g",
        policy_tokenizer=loaded.tokenizer,
        safe_word="s",
        unsafe_word="u",
    )


def test_rewards_unchanged_and_each_call_pays_the_suffix() -> None:
    plain, costed = readout(), SuffixCosted(readout(), 7)
    tok = plain.backend.loaded.tokenizer
    seqs = [seq(tok, "how to x", "abc"), seq(tok, "how to x", "abd")]
    assert torch.equal(plain.score(seqs), costed.score(seqs))
    extra = costed.backend.compute.minus(plain.backend.compute)
    assert extra.tokens_computed == 2 * 7 and costed.calls == plain.calls == 2
    fm = plain.backend.flop_model
    assert extra.flops == pytest.approx(sum(fm.segment(len(plain.tokens(s)), 7) for s in seqs))
    assert (extra.calls, extra.forwards, extra.sequences) == (0, 0, 0)  # nothing more ran


def test_children_cost_what_a_real_suffix_guard_computes() -> None:
    """Scoring an answer token by token, as beam search scores children: a suffix guard
    computes 1 + (its suffix) new positions per child, the costed readout guard is charged
    the same, where the readout guard alone computes 1."""
    real = suffix_guard()
    _, _, after = real.render("tell me", "")
    tail = len(byte_tokenizer().encode(after, add_special_tokens=False))
    costed, plain = SuffixCosted(readout(), tail), readout()
    s = seq(byte_tokenizer(), "tell me", "y" * 6)
    per_child: dict[str, list[int]] = {"real": [], "costed": [], "plain": []}
    for j in range(1, 7):
        child = s.with_generated(s.generated[:j])
        for name, guard in (("real", real), ("costed", costed), ("plain", plain)):
            before = guard.backend.compute.tokens_computed
            guard.score([child])
            per_child[name].append(guard.backend.compute.tokens_computed - before)
    assert per_child["real"][1:] == per_child["costed"][1:] == [1 + tail] * 5
    assert per_child["plain"][1:] == [1] * 5


def test_prefixes_pay_a_suffix_each() -> None:
    plain, costed = readout(), SuffixCosted(readout(), 5)
    s = seq(plain.backend.loaded.tokenizer, "q", "abcd")
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.score_prefixes([s]), costed.score_prefixes([s]), strict=True)
    )
    assert costed.backend.compute.tokens_computed - plain.backend.compute.tokens_computed == 4 * 5
    assert costed.calls == 4


def test_scheduler_charges_each_search_as_alone() -> None:
    """Each search's ledger takes its own rows' suffix charges: a shared step bills every beam
    search what it costs alone."""
    tiny = load_model("tiny-random-llama")

    def world() -> World:
        return World(make_policy(tiny), guard=SuffixCosted(readout(), 9))

    w = world()
    cfgs = [SearchConfig(budget=b, max_new_tokens=4, min_new_tokens=2, seed=b) for b in (1, 2)]
    seqs = [w.policy.chat.sequence(t) for t in ("hi there", "tell me")]
    alone = []
    for s, c in zip(seqs, cfgs, strict=True):
        for b in w.backends().values():
            b.clear()
        alone.append(run_search("beam", w, s, c))
    w2 = world()
    sched = Scheduler(w2, max_searches=2)
    for k, (s, c) in enumerate(zip(seqs, cfgs, strict=True)):
        sched.submit(k, "beam", s, c)
    got = {f.key: f.result for f in sched.run()}
    for k, ref in enumerate(alone):
        result = got[k]
        assert result is not None and result.generated == ref.generated
        assert (
            result.compute.per_model["guard"].to_dict() == ref.compute.per_model["guard"].to_dict()
        )
        assert result.reward_calls == ref.reward_calls


def test_bad_costs() -> None:
    assert parse_guard_cost("readout") == 0
    assert parse_guard_cost("suffix") == DEFAULT_SUFFIX_TOKENS
    assert parse_guard_cost("suffix:12") == 12
    for bad in ("suffix:0", "suffix:", "suffix:x", "readout:3", "llama"):
        with pytest.raises(SaffronError) as err:
            parse_guard_cost(bad)
        assert str(err.value) == (
            f"guard cost must be 'readout', 'suffix' or 'suffix:N' with N ≥ 1, got {bad!r}"
        )
    with pytest.raises(SaffronError, match="already computes its suffix"):
        SuffixCosted(suffix_guard(), 5)
    with pytest.raises(SaffronError, match="suffix_tokens must be an integer ≥ 1, got 0"):
        SuffixCosted(readout(), 0)
