"""What a guard call costs: as run, or as the paper's suffix guard would have cost it.

The paper's argument that tree search loses to Best-of-N at equal compute rests on process-reward
calls being expensive: Llama Guard 3 reads its verdict after an instruction suffix that follows
the answer, so every scored prefix is its own sequence whose suffix must be computed anew (the
trie shares the template and the answer up to the new token, never the suffix, which comes after
it). smol-guard (:class:`~saffron.reward.guard.ReadoutGuard`) reads a verdict at every answer
position, so a process reward on a child whose parent was scored costs one new token.

:class:`SuffixCosted` puts the paper's reading back as an *accounting model*: it wraps a guard
that reads every position, returns exactly its rewards, and charges each scored
(prompt, response) ``suffix_tokens`` more positions computed after the response, with the
attention term over the real context (:meth:`FlopModel.segment`). Nothing more runs; the
backend's counters and every search's ledger move as if the suffix had been computed. The
backbone stays the guard's own (135M for smol-guard, not Llama Guard's 1B), so the model isolates
the suffix's share of the cost, not the size of the paper's guard. Both readings of one search
are then in the records: run it once as is (``--guard-cost readout``) and once with
``--guard-cost suffix``; the answers are the same, only the compute differs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from saffron.errors import SaffronError
from saffron.reward.base import Guard
from saffron.reward.guard import SuffixGuard
from saffron.types import TokenSequence

# Llama Guard 3's closing instruction (the text after the judged answer: end of conversation,
# the assessment instruction) encodes to 61 tokens in SmolLM2's tokenizer, and the header of
# the verdict turn in SmolLM2's chat template to 6 more: the charge per call of
# ``--guard-cost suffix`` in the embedded world.
DEFAULT_SUFFIX_TOKENS = 67
READOUT = "readout"
SUFFIX = "suffix"


def parse_guard_cost(text: str) -> int:
    """The suffix length a ``--guard-cost`` value charges: ``readout`` → 0 (as run),
    ``suffix`` → :data:`DEFAULT_SUFFIX_TOKENS`, ``suffix:N`` → N ≥ 1. SaffronError otherwise."""
    kind, sep, n = text.partition(":")
    if kind == READOUT and not sep:
        return 0
    if kind == SUFFIX and not sep:
        return DEFAULT_SUFFIX_TOKENS
    if kind == SUFFIX and n.isdigit() and int(n) >= 1:
        return int(n)
    raise SaffronError(
        f"guard cost must be 'readout', 'suffix' or 'suffix:N' with N ≥ 1, got {text!r}"
    )


class SuffixCosted(Guard):
    """``inner``'s rewards, billed as a suffix guard's (module doc). ``calls`` counts scored
    (prompt, response) pairs, as every guard does.

    ``inner`` must read its verdict without a suffix and expose ``tokens(seq)``, its input for
    a sequence (:class:`~saffron.reward.guard.ReadoutGuard` does): the suffix of a call on
    ``seq`` is charged after ``len(inner.tokens(seq))`` positions.
    """

    def __init__(self, inner: Guard, suffix_tokens: int = DEFAULT_SUFFIX_TOKENS) -> None:
        if isinstance(inner, SuffixGuard):
            raise SaffronError(f"guard {inner.name!r} already computes its suffix on every call")
        if not callable(getattr(inner, "tokens", None)):
            raise SaffronError(f"guard {inner.name!r} does not say what it reads; cannot cost it")
        if isinstance(suffix_tokens, bool) or not isinstance(suffix_tokens, int):
            raise SaffronError(f"suffix_tokens must be an integer ≥ 1, got {suffix_tokens!r}")
        if suffix_tokens < 1:
            raise SaffronError(f"suffix_tokens must be an integer ≥ 1, got {suffix_tokens}")
        self.inner, self.suffix_tokens = inner, suffix_tokens
        self.backend, self.name, self.calls = inner.backend, inner.name, 0

    def _length(self, seq: TokenSequence) -> int:
        return len(self.inner.tokens(seq))  # type: ignore[attr-defined]

    def score(self, seqs: Sequence[TokenSequence]) -> Tensor:
        """``inner.score(seqs)``, then ``suffix_tokens`` positions charged per sequence (one row
        per sequence, so a scheduler's shared call charges each search its own)."""
        out = self.inner.score(seqs)
        self.calls += len(seqs)
        self.backend.charge_positions([(self._length(s), self.suffix_tokens) for s in seqs])
        return out

    def score_prefixes(self, seqs: Sequence[TokenSequence]) -> list[Tensor]:
        """``inner.score_prefixes(seqs)``, then a suffix charged after every prefix. Not for a
        scheduler's shared call (its rows are prefixes, not one per search)."""
        out = self.inner.score_prefixes(seqs)
        rows = []
        for s in seqs:
            answer_start = self._length(s) - len(s.generated)
            rows += [(answer_start + j + 1, self.suffix_tokens) for j in range(len(s.generated))]
        self.calls += len(rows)
        self.backend.charge_positions(rows)
        return out
