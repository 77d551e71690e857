"""Reward-model interfaces: a safety guard (outcome/process reward) and the MRM.

Reward convention (Llama Guard 3, paper "The problem"): reward = logit("safe") − logit("unsafe")
at the verdict position; the answer is judged unsafe iff reward < 0. Reward models see the
prompt and the *generated* tokens only — never the attacker's prefill.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from saffron.lm.backend import Backend
from saffron.lm.ledger import Ledger
from saffron.types import TokenSequence


class Guard(ABC):
    """A safety judge usable as outcome reward (ORM), process reward (PRM) and final judge.

    ``calls`` counts scored (prompt, response) pairs: one per sequence in :meth:`score`, one per
    prefix in :meth:`score_prefixes` — the unit in which the paper counts PRM calls.
    """

    backend: Backend
    name: str
    calls: int = 0

    @abstractmethod
    def score(self, seqs: Sequence[TokenSequence]) -> Tensor:
        """Outcome reward of each (prompt, generated) pair: shape (B,), float32.

        An empty ``generated`` is scored as the empty answer (the verdict read right after the
        template's assistant header).
        """

    @abstractmethod
    def score_prefixes(self, seqs: Sequence[TokenSequence]) -> list[Tensor]:
        """Process reward after every generated token: for each sequence a (len(generated),)
        tensor whose entry j is the reward of ``generated[: j + 1]``."""


class MultifurcationRM(ABC):
    """A reward model over next tokens: one call scores every possible next token (paper Eq. 3).

    :meth:`rewards` returns, for each sequence s, a (vocab,) vector whose entry a estimates the
    guard's reward of s·a. Entries of tokens never supervised in training are −∞ when the
    conservative mask is on (paper Eq. 7). ``calls`` counts scored sequences.
    """

    backend: Backend
    name: str
    vocab_size: int
    calls: int = 0

    @abstractmethod
    def rewards(self, seqs: Sequence[TokenSequence], *, conservative: bool = True) -> Tensor:
        """(B, vocab) float32 rewards of every next token after each sequence."""

    def reward_rows(
        self, seqs: Sequence[TokenSequence], *, conservative: bool = True
    ) -> RewardRows:
        """The reward vectors of :meth:`rewards`, read entry by entry (:class:`RewardRows`).

        A search needs only the entries of its children, a few per row of the vocabulary; an
        MRM with a linear head overrides this to compute those entries alone. This default
        computes the whole vectors with :meth:`rewards` and reads them.
        """
        return DenseRewards(self.rewards(seqs, conservative=conservative).float().cpu())


class RewardRows(ABC):
    """Reward vectors of B sequences (B, vocab), of which a caller reads chosen entries.

    Contract: ``at(rows, tokens)[i]`` equals entry ``tokens[i]`` of row ``rows[i]`` (−∞ for a
    token the conservative mask rules out); ``split`` cuts the rows into consecutive parts, in
    order, each charged to its own ledger (or to none) for the entries later read from it.
    """

    @abstractmethod
    def __len__(self) -> int:
        """The number of rows B."""

    @abstractmethod
    def at(self, rows: Tensor, tokens: Tensor) -> Tensor:
        """Entries (M,) CPU float32 for row indices and token ids, both int64 (M,)."""

    @abstractmethod
    def split(self, sizes: Sequence[int], payers: Sequence[Ledger | None]) -> list[RewardRows]:
        """Consecutive parts of ``sizes`` rows (summing to B), part i charged to payers[i]."""


class DenseRewards(RewardRows):
    """Reward vectors already computed: a CPU float32 tensor (B, vocab)."""

    def __init__(self, table: Tensor) -> None:
        self.table = table

    def __len__(self) -> int:
        return int(self.table.shape[0])

    def at(self, rows: Tensor, tokens: Tensor) -> Tensor:
        return self.table[rows, tokens]

    def split(self, sizes: Sequence[int], payers: Sequence[Ledger | None]) -> list[RewardRows]:
        return [DenseRewards(t) for t in torch.split(self.table, list(sizes))]


NO_REWARDS: RewardRows = DenseRewards(torch.zeros(0, 0))
