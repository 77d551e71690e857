"""Reward-model interfaces: a safety guard (outcome/process reward) and the MRM.

Reward convention (Llama Guard 3, paper "The problem"): reward = logit("safe") − logit("unsafe")
at the verdict position; the answer is judged unsafe iff reward < 0. Reward models see the
prompt and the *generated* tokens only — never the attacker's prefill.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch import Tensor

from saffron.lm.backend import Backend
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
