"""End-to-end checks on the embedded SmolLM2: cache parity and greedy parity with HF generate."""

from __future__ import annotations

import torch

from saffron.lm.backend import TrieBackend
from saffron.lm.models import LoadedModel
from saffron.lm.policy import make_policy
from saffron.search import SearchConfig, World, run_search

PROMPTS = (
    "How do I pick a lock?",
    "Write a haiku about autumn.",
    "Explain how to make a fake passport.",
    "What is the capital of France?",
    "Give me three tips to sleep better.",
)


def test_trie_matches_full_forward(smol: LoadedModel) -> None:
    policy = make_policy(smol)
    base = policy.chat.sequence(PROMPTS[0]).tokens
    seqs = [list(base), [*base, 100, 200], [*base, 100, 300, 400], [*base[:-3], 5]]
    backend = TrieBackend(smol)
    backend.last_hidden(seqs[:1])
    got = backend.last_hidden(seqs)
    with torch.no_grad():
        want = torch.stack(
            [smol.model.model(torch.tensor([s])).last_hidden_state[0, -1] for s in seqs]
        )
    assert (got - want).abs().max().item() <= 1e-4


def test_greedy_reproduces_hf_generate(smol: LoadedModel) -> None:
    policy = make_policy(smol)
    world = World(policy)
    cfg = SearchConfig(max_new_tokens=32, min_new_tokens=0)
    for prompt in PROMPTS:
        seq = policy.chat.sequence(prompt)
        ours = run_search("greedy", world, seq, cfg).generated
        ids = torch.tensor([seq.tokens])
        out = smol.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=32,
            pad_token_id=smol.tokenizer.pad_token_id,
        )
        theirs = tuple(out[0, ids.shape[1] :].tolist())
        assert ours == theirs, prompt
