"""Analytic FLOP counts for decoder-only transformer forwards.

Per computed token at context length c (the token attends to c keys, itself included):

    FLOPs = 2 · N_matmul + 4 · n_layer · d_attn · c

``2 · N_matmul`` is the multiply–add of every weight matrix the token passes through
(Kaplan et al. 2020, "Scaling Laws for Neural Language Models", Table 1: C_forward ≈ 2N);
N_matmul counts the decoder's linear weights (embedding lookups and norms are not matmuls).
The attention term counts the two score matmuls per layer, Q·Kᵀ and A·V, each
2 · c · d_attn for one query (d_attn = n_heads · head_dim); Kaplan's table lists the first one
only. A head applied to a hidden state costs 2 · d_model · d_out per row.

Cached tokens are not computed and cost nothing. Padding added for batching is not counted:
the figure is the compute the request needs, not what a given kernel wasted.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class FlopModel:
    """The numbers of a decoder that the FLOP formula needs."""

    matmul_params: int  # linear weights inside the decoder layers
    n_layers: int
    d_attn: int  # n_heads · head_dim

    @classmethod
    def from_decoder(cls, decoder: nn.Module, config: object) -> FlopModel:
        """Read the counts off a Hugging Face decoder (``model.model``) and its config."""
        params = sum(mod.weight.numel() for mod in decoder.modules() if isinstance(mod, nn.Linear))
        n_heads = int(getattr(config, "num_attention_heads"))  # noqa: B009
        hidden = int(getattr(config, "hidden_size"))  # noqa: B009
        head_dim = int(getattr(config, "head_dim", None) or hidden // n_heads)
        return cls(
            matmul_params=params,
            n_layers=int(getattr(config, "num_hidden_layers")),  # noqa: B009
            d_attn=n_heads * head_dim,
        )

    def segment(self, past: int, new: int) -> float:
        """FLOPs to compute ``new`` tokens after ``past`` cached ones.

        Token j (0-based) of the segment attends to past + j + 1 keys, so the attention term
        sums c over past+1 … past+new.
        """
        if new <= 0:
            return 0.0
        contexts = new * past + new * (new + 1) // 2
        return 2.0 * self.matmul_params * new + 4.0 * self.n_layers * self.d_attn * contexts

    @staticmethod
    def head(rows: int, d_model: int, d_out: int) -> float:
        """FLOPs of a linear head over ``rows`` hidden states."""
        return 2.0 * rows * d_model * d_out
