"""The batched step helpers of :mod:`saffron.search.decoding`: the sparse nucleus equals the
dense top-p mask, pair for pair and in order."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from saffron.search.decoding import nucleus, top_p_mask


def dense(logits: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: the (B, V) mask of kept finite tokens, scanned."""
    rows, tokens = torch.nonzero(top_p_mask(logits, p) & torch.isfinite(logits), as_tuple=True)
    return rows, tokens


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    rows=st.integers(1, 6),
    vocab=st.sampled_from([3, 50, 200]),
    p=st.sampled_from([0.1, 0.5, 0.8, 0.95, 1.0]),
    flat=st.booleans(),
    forbid=st.integers(0, 2),
)
def test_nucleus_equals_the_dense_mask(
    seed: int, rows: int, vocab: int, p: float, flat: bool, forbid: int
) -> None:
    """Peaked and flat rows (a nucleus wider than the top-k candidates), −∞ tokens, ties."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * (0.05 if flat else 4.0)
    logits[:, :forbid] = float("-inf")
    logits[0, -2:] = logits[0, -1]  # a tie
    want_rows, want_tokens = dense(logits, p)
    got_rows, got_tokens = nucleus(logits, p)
    assert torch.equal(got_rows, want_rows) and torch.equal(got_tokens, want_tokens)


def test_nucleus_of_mixed_rows() -> None:
    """One peaked row and one row flat over 1000 tokens in the same call."""
    logits = torch.zeros(2, 1000)
    logits[0, 7] = 20.0
    rows, tokens = nucleus(logits, 0.8)
    assert rows.tolist().count(0) == 1 and tokens[0] == 7
    assert rows.tolist().count(1) == 800  # the first 800 of 1000 equal tokens reach 0.8
    want = dense(logits, 0.8)
    assert torch.equal(rows, want[0]) and torch.equal(tokens, want[1])
