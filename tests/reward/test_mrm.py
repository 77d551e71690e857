"""The MRM on tiny models: one call scores every next token, the bias is used, unseen → −∞,
the policy's vocabulary is enforced, and a Saffron-1 step scores all children in one call."""

from __future__ import annotations

import pytest
import torch

from saffron.errors import SaffronError
from saffron.lm.backend import PlainBackend, TrieBackend
from saffron.lm.models import LoadedModel, tiny_random_llama
from saffron.lm.policy import make_policy
from saffron.reward.mrm import MRM, Layout
from saffron.search import SearchConfig, World, run_search
from saffron.types import TokenSequence

EOS = 2
LAYOUT = Layout(prefix=(1, 80, 81), infix=(82, 83))


def tiny(seed: int = 7) -> LoadedModel:
    model, tok = tiny_random_llama(seed=seed)
    model.eval()
    return LoadedModel("tiny-mrm", model, tok)


def make_mrm(unseen: list[int] = (), *, plain: bool = False) -> MRM:
    loaded = tiny()
    backend = PlainBackend(loaded) if plain else TrieBackend(loaded)
    vocab = backend.vocab_size
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[list(unseen)] = True
    bias = torch.linspace(-1, 1, vocab)
    return MRM(backend, name="tiny-mrm", layout=LAYOUT, bias=bias, unseen=mask)


def seq(prompt: tuple[int, ...], gen: tuple[int, ...], prefill: tuple[int, ...] = ()):
    return TokenSequence((1, 9), prompt, (2, 9), prefill, gen)


def test_one_backend_call_scores_every_next_token_of_every_sequence() -> None:
    mrm = make_mrm()
    seqs = [seq((40, 41), tuple(range(50, 50 + i))) for i in range(8)]
    out = mrm.rewards(seqs)
    assert out.shape == (8, mrm.vocab_size) and out.dtype == torch.float32
    c = mrm.backend.compute
    assert (c.calls, c.sequences) == (1, 8)
    assert mrm.calls == 8


def test_rewards_are_lm_head_plus_bias_at_the_last_position() -> None:
    mrm = make_mrm(plain=True)
    s = seq((40, 41, 42), (60, 61))
    assert mrm.tokens(s) == (1, 80, 81, 40, 41, 42, 82, 83, 60, 61)
    with torch.no_grad():
        logits = mrm.backend.model(torch.tensor([mrm.tokens(s)])).logits[0, -1]
    want = logits + mrm.head.bias
    assert torch.allclose(mrm.rewards([s], conservative=False)[0], want, atol=1e-4)
    # the bias is really used (the released code's head bias never reached the output)
    before = mrm.rewards([s], conservative=False)
    with torch.no_grad():
        mrm.head.bias += 5.0
    assert torch.allclose(mrm.rewards([s], conservative=False), before + 5.0, atol=1e-4)


def test_unseen_tokens_are_minus_infinity_only_when_conservative() -> None:
    unseen = [0, 1, 7, 100, 250]
    mrm = make_mrm(unseen)
    s = seq((40,), (60,))
    out = mrm.rewards([s])[0]
    assert torch.all(torch.isneginf(out[unseen]))
    assert torch.isfinite(out[[i for i in range(mrm.vocab_size) if i not in unseen]]).all()
    assert torch.isfinite(out[EOS])  # EOS is scored: a beam can end on merit
    assert torch.isfinite(mrm.rewards([s], conservative=False)).all()


def test_prefill_is_never_seen() -> None:
    mrm = make_mrm()
    a, b = seq((40,), (60, 61), prefill=(70, 71, 72)), seq((40,), (60, 61))
    assert torch.equal(mrm.rewards([a]), mrm.rewards([b]))


def test_next_token_rewards_are_the_entries_of_each_prefix_vector() -> None:
    mrm = make_mrm([5])
    s = seq((40, 41), (60, 61, 62, EOS))
    per_token = mrm.next_token_rewards([s, seq((40,), ())])
    assert per_token[1].shape == (0,)
    prefixes = [s.with_generated(s.generated[:j]) for j in range(4)]
    full = mrm.rewards(prefixes, conservative=False)
    assert torch.allclose(per_token[0], full[torch.arange(4), torch.tensor(s.generated)], atol=1e-5)


def test_a_policy_with_another_vocabulary_is_refused() -> None:
    mrm = make_mrm()
    with pytest.raises(SaffronError) as err:
        mrm.check_policy(49152)
    assert str(err.value) == (
        "MRM 'tiny-mrm' scores a vocabulary of 259 tokens but the policy has 49152; "
        "an MRM only works with its own policy's tokenizer"
    )
    mrm.check_policy(259)
    mrm.meta["policy_vocab_hash"] = "a" * 64
    with pytest.raises(SaffronError, match="was trained for another tokenizer"):
        mrm.check_policy(259, "b" * 64)


def test_bad_mask_or_bias_shapes_are_refused() -> None:
    loaded = tiny()
    backend = TrieBackend(loaded)
    with pytest.raises(SaffronError, match="unseen mask must be bool of shape"):
        MRM(backend, name="x", layout=LAYOUT, bias=torch.zeros(259), unseen=torch.zeros(259))
    with pytest.raises(SaffronError, match="reward head bias has shape"):
        MRM(
            backend,
            name="x",
            layout=LAYOUT,
            bias=torch.zeros(10),
            unseen=torch.zeros(259, dtype=torch.bool),
        )


def test_a_search_step_over_8_beams_runs_the_mrm_once_on_8_sequences(tiny) -> None:
    """Paper: one MRM call per beam replaces |children| PRM calls. Width 8, every token a child
    (top-p 1.0, 259 children per beam): step 1 scores the root, step 2 the 8 beams — 2 backend
    calls on 1 + 8 sequences, not 8 × 259."""
    mrm = make_mrm()
    world = World(policy=make_policy(tiny), mrm=mrm)
    start = world.policy.chat.sequence("Hi", prefill="Ok")
    cfg = SearchConfig(budget=8, max_new_tokens=2, min_new_tokens=2, top_p=1.0)
    result = run_search("saffron", world, start, cfg)
    assert result.extra["beams_per_step"] == [1, 8]
    spent = result.compute.per_model["mrm"]
    assert (spent.calls, spent.sequences) == (2, 9)
    assert mrm.calls == 9 and result.reward_calls["mrm"] == 9
    assert len(result.generated) == 2


def test_a_saffron_search_counts_the_mrm_head_entries_it_reads(tiny, monkeypatch) -> None:
    """The MRM's reward head is part of a Saffron search's FLOPs, counted as it runs: one
    weight row per child scored (2·d each), not the whole d × V head per beam. The same search
    with heads counted as free costs exactly 2·d per scored child less."""
    from saffron.lm.flops import FlopModel

    def search() -> tuple[float, int]:
        mrm = make_mrm()
        world = World(policy=make_policy(tiny), mrm=mrm)
        start = world.policy.chat.sequence("Hi", prefill="Ok")
        cfg = SearchConfig(budget=4, max_new_tokens=3, min_new_tokens=3, top_p=1.0)
        result = run_search("saffron", world, start, cfg)
        return result.compute.per_model["mrm"].flops, result.extra["children_scored"]

    counted, children = search()
    monkeypatch.setattr(FlopModel, "head", staticmethod(lambda rows, d_model, d_out: 0.0))
    without_heads, same_children = search()
    d = make_mrm().backend.d_model
    assert children == same_children > 0
    assert counted - without_heads == pytest.approx(2 * d * children)


def test_reward_rows_read_the_entries_of_rewards() -> None:
    """Entries read from :meth:`MRM.reward_rows` equal those of the whole vectors (float32
    rounding apart), −∞ where unseen under the conservative mask; split parts read their own
    rows; each entry read costs 2·d FLOPs, charged to the part's ledger."""
    mrm = make_mrm([5])
    seqs = [seq((5, 6, 7), (8,)), seq((5, 9), ())]
    rows, tokens = torch.tensor([0, 0, 1, 1]), torch.tensor([3, 5, 5, 250])
    for conservative in (True, False):
        full = mrm.rewards(seqs, conservative=conservative)
        got = mrm.reward_rows(seqs, conservative=conservative).at(rows, tokens)
        assert torch.allclose(got, full[rows, tokens], atol=1e-5)
        assert bool(torch.isinf(got[1])) is conservative
    ledger = mrm.backend.ledger()
    first, second = mrm.reward_rows(seqs).split([1, 1], [None, ledger])
    flops = mrm.backend.compute.flops
    assert torch.allclose(second.at(torch.tensor([0]), tokens[3:]), full[1, 250:251], atol=1e-5)
    d = mrm.backend.d_model
    assert ledger.compute.flops == mrm.backend.compute.flops - flops == 2 * d
    assert len(first) == len(second) == 1
