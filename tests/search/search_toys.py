"""Toy models for search tests: a policy with a chosen next-token table, a guard and an MRM whose
rewards are known functions of the generated tokens. All three run a real tiny-random-llama
backend on every call, so compute counters move exactly as with real models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from saffron.lm.backend import Backend, TrieBackend
from saffron.lm.models import LoadedModel, tiny_random_llama
from saffron.lm.policy import Policy, make_policy
from saffron.reward.base import Guard, MultifurcationRM
from saffron.search.base import World
from saffron.types import TokenSequence

Reward = Callable[[tuple[int, ...]], float]
EOS = 2  # <|im_end|> of the byte tokenizer


def loaded_tiny(seed: int, name: str) -> LoadedModel:
    model, tok = tiny_random_llama(seed=seed)
    model.eval()
    return LoadedModel(name=name, model=model, tokenizer=tok)


def visible(s: TokenSequence) -> tuple[int, ...]:
    """What a reward model reads: the prompt and the generated tokens, never the prefill."""
    return s.prompt + s.generated


@dataclass
class TablePolicy(Policy):
    """A policy whose next-token distribution is ``table`` (token → probability) at every step.

    It still runs its backend on every call, so policy compute is real.
    """

    table: dict[int, float] = field(default_factory=dict)

    def next_logits(self, seqs: Sequence[TokenSequence]) -> Tensor:
        self.backend.logits([s.tokens for s in seqs])
        logits = torch.full((len(seqs), self.vocab_size), float("-inf"))
        for tok, p in self.table.items():
            logits[:, tok] = math.log(p)
        return logits


class ToyGuard(Guard):
    """Guard with reward ``reward(generated)``; records each call's sequences."""

    name = "toy-guard"

    def __init__(self, backend: Backend, reward: Reward) -> None:
        self.backend = backend
        self.reward = reward
        self.calls = 0
        self.batches: list[list[TokenSequence]] = []

    def score(self, seqs: Sequence[TokenSequence]) -> Tensor:
        self.backend.last_hidden([visible(s) for s in seqs])
        self.calls += len(seqs)
        self.batches.append(list(seqs))
        return torch.tensor([self.reward(s.generated) for s in seqs], dtype=torch.float32)

    def score_prefixes(self, seqs: Sequence[TokenSequence]) -> list[Tensor]:
        self.backend.hidden_from([visible(s) for s in seqs], [len(s.prompt) for s in seqs])
        self.calls += sum(len(s.generated) for s in seqs)
        return [
            torch.tensor([self.reward(s.generated[: j + 1]) for j in range(len(s.generated))])
            for s in seqs
        ]


class ToyMRM(MultifurcationRM):
    """MRM whose reward of s·a is exactly the toy guard's ``reward(generated + (a,))``."""

    name = "toy-mrm"

    def __init__(
        self,
        backend: Backend,
        reward: Reward,
        vocab_size: int,
        unseen: frozenset[int] = frozenset(),
    ) -> None:
        self.backend = backend
        self.reward = reward
        self.vocab_size = vocab_size
        self.unseen = unseen
        self.calls = 0
        self.batches: list[list[TokenSequence]] = []

    def rewards(self, seqs: Sequence[TokenSequence], *, conservative: bool = True) -> Tensor:
        self.backend.last_hidden([visible(s) for s in seqs])
        self.calls += len(seqs)
        self.batches.append(list(seqs))
        out = torch.tensor(
            [[self.reward((*s.generated, a)) for a in range(self.vocab_size)] for s in seqs],
            dtype=torch.float32,
        )
        if conservative and self.unseen:
            out[:, sorted(self.unseen)] = float("-inf")
        return out


def frac_reward(safe: frozenset[int]) -> Reward:
    """2·(fraction of generated tokens in ``safe``) − 1: +1 all safe, −1 none; 0 when empty."""

    def reward(gen: tuple[int, ...]) -> float:
        return 2.0 * sum(t in safe for t in gen) / len(gen) - 1.0 if gen else 0.0

    return reward


@dataclass
class Models:
    """Loaded tiny models, shared by a test session (backends are made per world)."""

    policy: LoadedModel
    guard: LoadedModel
    mrm: LoadedModel

    def world(
        self,
        reward: Reward,
        *,
        table: dict[int, float] | None = None,
        unseen: frozenset[int] = frozenset(),
        mrm_vocab: int | None = None,
        guard: bool = True,
        mrm: bool = True,
    ) -> World:
        """A fresh world (fresh caches and counters). ``table`` None: the real tiny policy."""
        base = make_policy(self.policy)
        policy: Policy = base if table is None else TablePolicy(base.backend, base.chat, table)
        vocab = mrm_vocab if mrm_vocab is not None else policy.vocab_size
        return World(
            policy=policy,
            guard=ToyGuard(TrieBackend(self.guard), reward) if guard else None,
            mrm=ToyMRM(TrieBackend(self.mrm), reward, vocab, unseen) if mrm else None,
        )
