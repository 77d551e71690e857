"""Attention over a stem shared by a group of rows plus each row's own suffix.

A batched forward of the trie backend reads, for every row, the keys and values of its whole
past. Rows of one search share most of that past (the prompt, and the answer up to where the
beams branched), so gathering each row's past into a (B, kv, past, hd) buffer copies the
shared part once per row: with 16 searches of 16 beams in flight that copy was over a quarter
of a step (BENCHMARKS.md, "Where a step's time goes").

Here the rows of a forward are split into groups that share a stem (:func:`plan_stems`); the
stem's keys and values are gathered once per group, each row's buffer holds only its suffix
and its new positions, and :func:`stem_attention` attends over both:

    softmax([q·K_stemᵀ | q·K_ownᵀ] · scale) · [V_stem ; V_own]

one softmax over the concatenated scores (the scores are small; only keys and values are
large), so the result is ordinary attention over the row's whole past, up to float rounding.
Grouping depends on the rows of the forward only (their slot lists), never on which search
asked for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

STEM_ATTENTION = "saffron_stem"
MIN_SHARE = 0.5  # a row joins a group when the stem covers at least this share of its past


@dataclass(frozen=True)
class StemPlan:
    """How the rows of one forward share stems: ``cut[b]`` leading positions of row b's past
    are its group's stem; ``groups`` lists each group's rows; ``saved`` counts the positions
    not gathered again (Σ over rows of their stem, less each stem once)."""

    cut: list[int]
    groups: list[list[int]]
    saved: int


@dataclass(frozen=True)
class Stem:
    """The stems of one forward, for :func:`stem_attention`.

    ``keys``/``values`` (n_layers, G, kv, S, hd) with ``valid`` (G, S) bool: the gathered
    stems, right-padded; ``rows`` (G, R) int64: the rows of each group, padded with B (a
    dummy row); ``place`` (B,) int64: where row b sits in the flattened (G·R) layout.
    """

    keys: Tensor
    values: Tensor
    valid: Tensor
    rows: Tensor
    place: Tensor


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two slot lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan_stems(pasts: Sequence[Sequence[int]]) -> StemPlan:
    """Group rows by shared stems: rows sorted by their past's slots (trie order, so rows
    that share a prefix are neighbours); a row joins the current group when its common prefix
    with the group's first row covers at least ``MIN_SHARE`` of its past. The group's stem is
    the prefix all its members share. A pure function of the slot lists."""
    order = sorted(range(len(pasts)), key=lambda i: list(pasts[i]))
    groups: list[list[int]] = []
    stems: list[int] = []
    for i in order:
        if groups:
            shared = _common(pasts[groups[-1][0]], pasts[i])
            if shared and shared >= MIN_SHARE * len(pasts[i]):
                groups[-1].append(i)
                stems[-1] = min(stems[-1], shared)
                continue
        groups.append([i])
        stems.append(len(pasts[i]))
    cut = [0] * len(pasts)
    for members, stem in zip(groups, stems, strict=True):
        for i in members:
            cut[i] = stem
    saved = sum(cut) - sum(stems)
    return StemPlan(cut, groups, saved)


def stem_index(plan: StemPlan, pasts: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """The stems' slots (G, S) right-padded with slot 0, their validity (G, S), and the
    rows of each group (G, R) padded with B: CPU tensors."""
    stems = [list(pasts[g[0]][: plan.cut[g[0]]]) for g in plan.groups]
    width = max(len(s) for s in stems)
    slots = torch.tensor([s + [0] * (width - len(s)) for s in stems])
    valid = torch.arange(width)[None, :] < torch.tensor([len(s) for s in stems])[:, None]
    r = max(len(g) for g in plan.groups)
    rows = torch.tensor([g + [len(pasts)] * (r - len(g)) for g in plan.groups])
    return slots, valid, rows


def _to_groups(x: Tensor, stem: Stem) -> Tensor:
    """Rows (B, kv, Q, ·) → groups (G, kv, R·Q, ·), padding rows zero."""
    pad = torch.cat([x, x.new_zeros((1, *x.shape[1:]))])  # (B + 1, kv, Q, ·)
    g, r = stem.rows.shape
    grouped = pad[stem.rows.reshape(-1)].view(g, r, *x.shape[1:])  # (G, R, kv, Q, ·)
    return grouped.transpose(1, 2).reshape(g, x.shape[1], r * x.shape[2], x.shape[3])


def _to_rows(x: Tensor, stem: Stem, q: int) -> Tensor:
    """Groups (G, kv, R·Q, ·) → rows (B, kv, Q, ·)."""
    g, r = stem.rows.shape
    flat = x.view(g, x.shape[1], r, q, x.shape[3]).transpose(1, 2).reshape(g * r, x.shape[1], q, -1)
    return flat.index_select(0, stem.place)


def stem_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    stem: Stem | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Attention of rows over their group's stem and their own keys (module doc); without a
    ``stem``, Hugging Face's SDPA attention. query (B, H, L, hd); key, value (B, kv, T, hd):
    the row's suffix and new positions, ``attention_mask`` (B, 1, L, T) bool. Returns
    (B, L, H, hd) as the Hugging Face attention functions do."""
    if stem is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    assert attention_mask is not None and attention_mask.dtype == torch.bool
    b, h, length, hd = query.shape
    kv, t = key.shape[1], key.shape[2]
    q_len = (h // kv) * length  # GQA: a kv head's query heads stacked with the positions
    scale = scaling if scaling is not None else hd**-0.5
    q = query.reshape(b, kv, q_len, hd)
    layer = int(getattr(module, "layer_idx"))  # noqa: B009
    k_stem, v_stem = stem.keys[layer], stem.values[layer]  # (G, kv, S, hd)
    own = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # (B, kv, Q, T)
    mask = attention_mask[:, :, None].expand(b, 1, h // kv, length, t).reshape(b, 1, q_len, t)
    own = own.masked_fill(~mask, float("-inf"))
    shared = torch.matmul(_to_groups(q, stem), k_stem.transpose(-1, -2)).float() * scale
    shared = shared.masked_fill(~stem.valid[:, None, None, :], float("-inf"))  # (G, kv, R·Q, S)
    s = k_stem.shape[2]
    probs = torch.softmax(torch.cat([_to_rows(shared, stem, q_len), own], dim=-1), dim=-1)
    p_stem, p_own = probs.to(value.dtype).split([s, t], dim=-1)
    out = torch.matmul(p_own, value)  # (B, kv, Q, hd)
    out += _to_rows(torch.matmul(_to_groups(p_stem, stem), v_stem), stem, q_len)
    return out.view(b, h, length, hd).transpose(1, 2).contiguous(), None


AttentionInterface.register(STEM_ATTENTION, stem_attention)


@contextmanager
def stem_attention_on(model: nn.Module) -> Iterator[None]:
    """Route the model's attention through :func:`stem_attention` inside the block (one
    forward of the backend that owns the model; the implementation is restored after)."""
    config = getattr(model, "config")  # noqa: B009
    before = config._attn_implementation
    config._attn_implementation = STEM_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before
