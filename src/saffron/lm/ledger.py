"""Per-search compute accounting when many searches share one backend call.

The scheduler (:mod:`saffron.search.scheduler`) runs the rows of many searches in one call.
The backend's own counters then hold what actually ran; each search is charged by a
:class:`Ledger` of its own, with this rule:

    **a search is charged what its own calls would have cost on a cache of its own, empty when
    the search began** — the tokens, FLOPs, reused positions, calls and forwards that the same
    calls make when the search runs alone after ``backend.clear()``.

That is the paper's per-request compute (every request pays for its prompt), and it is exactly
what ``saffron eval`` records when it runs one search at a time from a cleared cache, so a
record does not depend on which searches happened to share a forward. A trie ledger replays the
backend's planning (:func:`saffron.lm.trie.plan_call`, :func:`saffron.lm.batching.chunk_sizes`)
on a token-only trie of its own: no tensors. Positions another search computed first cost this
search as much as if it had computed them; the difference between the sum of the ledgers and the
backend's counters is what sharing across searches saved. Eviction inside one search (a search
larger than the KV budget) is not replayed: such a search is charged as if nothing were evicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from saffron.lm.batching import chunk_sizes
from saffron.lm.flops import FlopModel
from saffron.lm.trie import Trie, plan_call
from saffron.types import ModelCompute


@dataclass
class Ledger:
    """The compute of one search on one model (``compute`` mutates as calls are charged).

    ``cached``: replay a trie cache (the search's positions are computed once); otherwise every
    call computes every sequence from its first token, as :class:`~saffron.lm.backend.PlainBackend`
    does.
    """

    flop_model: FlopModel
    d_model: int
    max_batch_tokens: int
    cached: bool
    compute: ModelCompute = field(default_factory=ModelCompute)
    trie: Trie = field(default_factory=Trie)

    def charge(self, seqs: Sequence[tuple[int, ...]]) -> None:
        """Charge one backend call over ``seqs`` (validated token tuples) to this search."""
        c = self.compute
        c.calls += 1
        c.sequences += len(seqs)
        if not self.cached:
            self._charge_segments([[(0, len(s)) for s in seqs]])
            return
        plan = plan_call(self.trie, seqs)
        for nd in plan.created:
            nd.slot = 0  # stored (the shadow trie holds no tensors)
        c.tokens_reused += plan.reused
        self._charge_segments(
            [[(start, len(path) - start) for path, start in wave] for wave in plan.waves()]
        )

    def charge_positions(self, past: int, new: int) -> None:
        """Charge ``new`` positions after ``past`` that the backend only accounts for
        (:meth:`saffron.lm.backend.Backend.charge_positions`): tokens and FLOPs."""
        self.compute.tokens_computed += new
        self.compute.flops += self.flop_model.segment(past, new)

    def charge_head(self, rows: int, d_out: int) -> None:
        """Charge a head over ``rows`` hidden states (:meth:`FlopModel.head`)."""
        self.compute.flops += FlopModel.head(rows, self.d_model, d_out)

    def _charge_segments(self, waves: list[list[tuple[int, int]]]) -> None:
        c = self.compute
        for sizes in waves:
            c.forwards += len(chunk_sizes(sizes, self.max_batch_tokens))
            for past, new in sizes:
                c.tokens_computed += new
                c.flops += self.flop_model.segment(past, new)
