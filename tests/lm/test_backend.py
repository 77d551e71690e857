"""Parity of the trie backend with uncached forwards, exact token accounting, eviction."""

from __future__ import annotations

import random
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from saffron.errors import SaffronError
from saffron.lm.backend import PlainBackend, TrieBackend
from saffron.lm.models import LoadedModel


def full_forward_last(loaded: LoadedModel, seqs: list[list[int]]) -> torch.Tensor:
    """Reference: a plain Hugging Face forward per sequence, no cache, no padding."""
    with torch.no_grad():
        return torch.stack(
            [loaded.model.model(torch.tensor([s])).last_hidden_state[0, -1] for s in seqs]
        )


# Sets of sequences that share prefixes: a few stems, each extended by random suffixes.
token = st.integers(min_value=3, max_value=200)
sequence_sets = st.lists(
    st.tuples(st.lists(token, min_size=0, max_size=12), st.lists(token, min_size=1, max_size=6)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=25, deadline=None)
@given(parts=sequence_sets, stem=st.lists(token, min_size=1, max_size=10))
def test_trie_matches_uncached_forward(tiny: LoadedModel, parts, stem) -> None:
    backend = TrieBackend(tiny)
    # Two rounds: the second extends sequences of the first, so it reads cached prefixes.
    first = [stem + a for a, _ in parts if stem + a]
    second = [stem + a + b for a, b in parts]
    for seqs in (first, second):
        if not seqs:
            continue
        got = backend.last_hidden(seqs)
        want = full_forward_last(tiny, seqs)
        assert (got - want).abs().max().item() <= 1e-4


@settings(max_examples=10, deadline=None)
@given(parts=sequence_sets)
def test_logits_and_positions_match_plain(tiny: LoadedModel, parts) -> None:
    trie, plain = TrieBackend(tiny), PlainBackend(tiny)
    seqs = [a + b for a, b in parts]
    assert (trie.logits(seqs) - plain.logits(seqs)).abs().max().item() <= 1e-4
    starts = [len(a) for a, _ in parts]
    pairs = zip(trie.hidden_from(seqs, starts), plain.hidden_from(seqs, starts), strict=True)
    for got, want in pairs:
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-4


def test_branches_compute_each_node_once(tiny: LoadedModel) -> None:
    """16 branches × 32 steps from a 60-token prompt compute 60 + (distinct tree nodes)."""
    rng = random.Random(0)
    prompt = [rng.randrange(3, 250) for _ in range(60)]
    backend = TrieBackend(tiny)
    branches = [list(prompt) for _ in range(16)]
    distinct: set[tuple[int, ...]] = set()
    for _ in range(32):
        backend.last_hidden(branches)
        # Beam-like: some branches copy another one before extending (shared prefixes).
        nxt = []
        for b in branches:
            src = b if rng.random() < 0.7 else branches[rng.randrange(16)]
            nxt.append([*src, rng.choice([3, 4, 5, 6])])
        branches = nxt
        distinct.update(tuple(b[60:]) for b in branches)
    backend.last_hidden(branches)
    # every distinct generated prefix is one tree node
    nodes = {p[:k] for p in distinct for k in range(1, len(p) + 1)}
    assert backend.compute.tokens_computed == 60 + len(nodes)
    assert backend.stats().nodes == 60 + len(nodes)
    # and asking again computes nothing
    before = backend.compute.tokens_computed
    backend.last_hidden(branches)
    assert backend.compute.tokens_computed == before


def test_shared_new_prefix_in_one_call_is_computed_once(tiny: LoadedModel) -> None:
    backend = TrieBackend(tiny)
    seqs = [[5] * 20 + [i + 3] for i in range(8)]
    got = backend.last_hidden(seqs)
    assert backend.compute.tokens_computed == 20 + 8
    assert backend.compute.tokens_reused == 7 * 20
    assert (got - full_forward_last(tiny, seqs)).abs().max().item() <= 1e-4


def test_eviction_keeps_results_and_budget(tiny: LoadedModel) -> None:
    roomy = TrieBackend(tiny)
    per_slot = roomy.pool.bytes_per_slot
    budget = 90 * per_slot
    small = TrieBackend(tiny, max_bytes=budget)
    rng = random.Random(1)
    for _ in range(12):
        seqs = [[rng.randrange(3, 250) for _ in range(rng.randrange(5, 30))] for _ in range(3)]
        a, b = small.last_hidden(seqs), roomy.last_hidden(seqs)
        assert (a - b).abs().max().item() <= 1e-5
        assert small.stats().bytes_held <= budget // 2  # the pool's half of the budget
        assert small.stats().bytes_peak <= budget  # pool, growth and gathered past together
    assert small.stats().nodes < roomy.stats().nodes


def test_eviction_prefers_least_recently_used(tiny: LoadedModel) -> None:
    # 80 positions of budget: a pool of 40 slots (one reserved), room for two 15-token prompts
    backend = TrieBackend(tiny, max_bytes=80 * TrieBackend(tiny).pool.bytes_per_slot)
    old, fresh = [7] * 15, [8] * 15
    backend.last_hidden([old])
    backend.last_hidden([fresh])
    backend.last_hidden([[9] * 15])  # needs room: the oldest leaves go first
    assert backend.cached_prefix_len(fresh) == 15
    assert backend.cached_prefix_len(old) < 15


def test_call_larger_than_budget_is_split_within_the_budget(tiny: LoadedModel) -> None:
    """A call whose new positions exceed the pool runs in parts of whole sequences; outputs
    equal an unbounded cache's, compute is counted once per call, and nothing the cache held
    (pool, its growth, the gathered past) ever exceeded the budget."""
    roomy = TrieBackend(tiny)
    per_slot = roomy.pool.bytes_per_slot
    budget = 64 * per_slot  # a pool of 32 slots; the call below needs 8 × 20 new positions
    small = TrieBackend(tiny, max_bytes=budget)
    rng = random.Random(4)
    seqs = [[5, 6, 7] + [rng.randrange(3, 250) for _ in range(17)] for _ in range(8)]
    got, want = small.last_hidden(seqs), roomy.last_hidden(seqs)
    assert got.shape == want.shape and (got - want).abs().max().item() <= 1e-5
    starts = [3] * len(seqs)
    for g, w in zip(small.hidden_from(seqs, starts), roomy.hidden_from(seqs, starts), strict=True):
        assert g.shape == (17, small.d_model) and (g - w).abs().max().item() <= 1e-5
    assert small.compute.calls == roomy.compute.calls == 2
    assert small.stats().bytes_peak <= budget
    assert small.max_batch_tokens <= 32  # a forward gathers at most the other half


def test_sequence_longer_than_the_pool_is_refused_and_cache_intact(tiny: LoadedModel) -> None:
    backend = TrieBackend(tiny, max_bytes=20 * TrieBackend(tiny).pool.bytes_per_slot)
    backend.last_hidden([[4, 5, 6]])
    with pytest.raises(SaffronError, match=r"KV cache budget .* too small for a sequence of 23"):
        backend.last_hidden([[4, 5, 6, *range(10, 30)]])
    assert backend.cached_prefix_len([4, 5, 6, 10]) == 3
    assert backend.stats().nodes == 3


def test_clear_and_bad_sequences(tiny: LoadedModel) -> None:
    backend = TrieBackend(tiny)
    backend.last_hidden([[3, 4, 5]])
    backend.clear()
    assert backend.stats().nodes == 0 and backend.stats().bytes_held == 0
    with pytest.raises(SaffronError, match="empty"):
        backend.last_hidden([[]])
    with pytest.raises(SaffronError, match="exceeds tiny-random-llama's context of 1024"):
        backend.last_hidden([[3] * 1025])


@settings(max_examples=25, deadline=None)
@given(
    parts=sequence_sets,
    stems=st.lists(st.lists(token, min_size=1, max_size=10), min_size=1, max_size=3),
)
def test_shared_stems_match_uncached_forward(tiny: LoadedModel, parts, stems) -> None:
    """With shared stems forced on (:mod:`saffron.lm.stem`: each group's stem gathered once,
    rows attend over it and their own suffix), every output equals the uncached forward's:
    several groups, one-token and several-token new segments, rows alone in their group."""
    backend = TrieBackend(tiny)
    backend.stem_min_bytes = 0
    rounds = [
        [stem for stem in stems],
        [stems[i % len(stems)] + a for i, (a, _) in enumerate(parts)],
        [stems[i % len(stems)] + a + b for i, (a, b) in enumerate(parts)],
        [stems[i % len(stems)] + a + b + [7] for i, (a, b) in enumerate(parts)],
    ]
    for seqs in rounds:
        got = backend.last_hidden(seqs)
        want = full_forward_last(tiny, seqs)
        assert (got - want).abs().max().item() <= 1e-4


def test_shared_stems_are_used_when_rows_share_their_past(tiny: LoadedModel) -> None:
    """Two prompts of 12 tokens, four beams each, extended three times (the last by three
    tokens per beam): every forward after the prompts' own shares each prompt once per group,
    and all match the uncached forward."""
    import saffron.lm.backend as backend_mod

    used = []
    real = backend_mod.stem_attention_on

    def spy(model):  # type: ignore[no-untyped-def]
        used.append(1)
        return real(model)

    backend = TrieBackend(tiny)
    backend.stem_min_bytes = 0
    prompts = [list(range(10, 22)), list(range(40, 52))]
    beams = [[*p, 100 + i] for p in prompts for i in range(4)]
    with mock.patch.object(backend_mod, "stem_attention_on", spy):
        for seqs in (prompts, beams, [[*b, 7] for b in beams], [[*b, 7, 8, 9] for b in beams]):
            got = backend.last_hidden(seqs)
            assert (got - full_forward_last(tiny, seqs)).abs().max().item() <= 1e-4
    assert len(used) == 3  # every decode forward; the prompts' own forward has no past


def test_plan_stems_groups_rows_that_share_most_of_their_past() -> None:
    from saffron.lm.stem import plan_stems

    pasts = [[1, 2, 3, 4, 5], [9, 8], [1, 2, 3, 4, 6], [1, 2, 7, 7, 7, 7, 7, 7], [9, 8, 7]]
    plan = plan_stems(pasts)
    # rows 0 and 2 share 4 of 5; row 3 shares 2 of 8 (under half): its own group; 1 and 4 share 9, 8
    assert sorted(map(sorted, plan.groups)) == [[0, 2], [1, 4], [3]]
    assert plan.cut == [4, 2, 4, 8, 2]
    assert plan.saved == 4 + 2
