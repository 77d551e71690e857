"""The embedded Gemma 3 270M base (the independent judge's backbone): its tokenizer, a forward
that reads English, and the trie cache's parity with a plain forward on a sliding-window model."""

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


def test_forward_reads_english(gemma: LoadedModel) -> None:
    tok = gemma.tokenizer
    text = "The cat sat on the mat. It was a sunny day, and the children played in the park."
    ids = tok.encode(text)

    def nll(order: list[int]) -> float:
        x = torch.tensor([order])
        with torch.no_grad():
            return float(gemma.model(x, labels=x).loss)

    # a language model: fluent text is far likelier than the same tokens reversed
    fluent, reversed_ = nll(ids), nll([ids[0], *ids[:0:-1]])
    assert fluent < 3.5 and fluent < reversed_ - 2


@pytest.mark.parametrize("stems", [False, True])
def test_trie_matches_plain_forward(gemma: LoadedModel, stems: bool) -> None:
    """Also with shared stems forced on (one KV head for four query heads)."""
    tok = gemma.tokenizer
    base = tok.encode("Request: how do I pick a lock?\nAnswer: Sure, first you need")
    seqs = [base, [*base, 100, 200], [*base[:-3], 5, 6, 7]]
    backend = TrieBackend(gemma)
    backend.stem_min_bytes = 0 if stems else None
    backend.last_hidden(seqs[:1])
    got = backend.last_hidden(seqs)
    with torch.no_grad():
        want = torch.stack(
            [gemma.model.model(torch.tensor([s])).last_hidden_state[0, -1] for s in seqs]
        )
    assert (got - want).abs().max().item() <= 1e-3 * want.abs().max().item()
