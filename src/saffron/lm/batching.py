"""How the new positions of one wave are split into batched forwards.

A forward pads every row to the longest past and the longest new segment, so its cost is
set by ``rows × (max past + max new)`` positions of attention and ``rows × max new`` positions
through the weights. :func:`chunk_sizes` keeps both bounded: at most ``max_tokens`` padded
positions per forward, and rows whose new segments differ a lot in length (a prompt of 60
tokens next to single decoding tokens) never share a forward, since every decoding row would
then pay for 60 positions of weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

PAD_WASTE = 2  # a forward's padded new positions stay within this factor of its real ones


def chunk_sizes(sizes: Sequence[tuple[int, int]], max_tokens: int) -> list[list[int]]:
    """Group segments, given as (past, new) lengths, into forwards; returns index lists.

    Sorted by (new, past) so rows of like size share a forward; a new forward starts when
    adding a row would exceed ``max_tokens`` padded positions or make the padded new positions
    exceed ``PAD_WASTE`` times the real ones. A single longer segment runs alone. Pure function
    of the lengths: a ledger replays it to count a search's forwards.
    """
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i][1], sizes[i][0]))
    chunks: list[list[int]] = []
    cur: list[int] = []
    pm = lm = real = 0
    for i in order:
        past, new = sizes[i]
        npm, nlm = max(pm, past), max(lm, new)
        full = (len(cur) + 1) * (npm + nlm) > max_tokens
        wasteful = (len(cur) + 1) * nlm > PAD_WASTE * (real + new)
        if cur and (full or wasteful):
            chunks.append(cur)
            cur, npm, nlm, real = [], past, new, 0
        cur.append(i)
        pm, lm, real = npm, nlm, real + new
    if cur:
        chunks.append(cur)
    return chunks


def batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of ``items`` of ``size`` elements (the last may be shorter)."""
    for i in range(0, len(items), size):
        yield list(items[i : i + size])
