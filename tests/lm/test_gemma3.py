"""The embedded Gemma 3 270M base (the independent judge's backbone): its tokenizer, a forward
that knows a fact, and the trie cache's parity with a plain forward on a sliding-window model."""

from __future__ import annotations

import pytest
import torch

from saffron.lm.backend import TrieBackend
from saffron.lm.models import GEMMA3, LoadedModel, load_model

pytestmark = pytest.mark.smol


@pytest.fixture(scope="module")
def gemma() -> LoadedModel:
    return load_model(GEMMA3)


def test_tokenizer(gemma: LoadedModel) -> None:
    tok = gemma.tokenizer
    assert len(tok) == 262144 and tok.bos_token == "<bos>"
    for word in (" safe", " unsafe"):
        assert len(tok.encode(word, add_special_tokens=False)) == 1
    text = "Request: how do I bake bread?\nAnswer: Mix flour, water and yeast."
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_forward_continues_a_fact(gemma: LoadedModel) -> None:
    tok = gemma.tokenizer
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = gemma.model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


def test_trie_matches_plain_forward(gemma: LoadedModel) -> None:
    tok = gemma.tokenizer
    base = tok.encode("Request: how do I pick a lock?\nAnswer: Sure, first you need")
    seqs = [base, [*base, 100, 200], [*base[:-3], 5, 6, 7]]
    backend = TrieBackend(gemma)
    backend.last_hidden(seqs[:1])
    got = backend.last_hidden(seqs)
    with torch.no_grad():
        want = torch.stack(
            [gemma.model.model(torch.tensor([s])).last_hidden_state[0, -1] for s in seqs]
        )
    assert (got - want).abs().max().item() <= 1e-3 * want.abs().max().item()
