"""Tiny worlds for server tests: the tiny random policy, a real :class:`ReadoutGuard` and a
real :class:`MRM` on tiny random networks (different seeds), so every code path of the server
runs the project's own model classes, in milliseconds.

``tiny_world`` is also the ``--world-factory`` the subprocess tests pass to ``saffron serve``.
``SAFFRON_TEST_STEP_DELAY`` (seconds, test-only) makes every policy step sleep that long, so a
request lasts long enough to be cancelled mid-way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from saffron.lm.backend import TrieBackend
from saffron.lm.models import LoadedModel, tiny_random_llama
from saffron.lm.policy import Policy, make_policy
from saffron.reward.guard import ReadoutGuard
from saffron.reward.mrm import MRM, Layout
from saffron.search import World
from saffron.types import TokenSequence


def loaded_tiny(seed: int, name: str) -> LoadedModel:
    model, tok = tiny_random_llama(seed=seed)
    model.eval()
    return LoadedModel(name=name, model=model, tokenizer=tok)


@dataclass
class SlowPolicy(Policy):
    """A policy that sleeps ``delay`` seconds before each step (and counts its steps)."""

    delay: float = 0.0
    steps: int = 0

    def next_logits(self, seqs: Sequence[TokenSequence]) -> Tensor:
        self.steps += 1
        time.sleep(self.delay)
        return super().next_logits(seqs)


def tiny_world(delay: float | None = None) -> World:
    """Policy ``tiny-random-llama``; guard and MRM on tiny networks with seeds 1 and 2."""
    if delay is None:
        delay = float(os.environ.get("SAFFRON_TEST_STEP_DELAY", "0"))
    base = make_policy(loaded_tiny(0, "tiny-random-llama"))
    policy = SlowPolicy(base.backend, base.chat, delay)
    tok = base.chat.tokenizer
    guard = ReadoutGuard(
        TrieBackend(loaded_tiny(1, "tiny-guard")),
        name="tiny-guard",
        policy_tokenizer=tok,
        safe_word="s",
        unsafe_word="u",
    )
    mrm_backend = TrieBackend(loaded_tiny(2, "tiny-mrm"))
    vocab = mrm_backend.vocab_size
    mrm = MRM(
        mrm_backend,
        name="tiny-mrm",
        layout=Layout(guard.prefix, guard.infix),
        bias=torch.zeros(vocab),
        unseen=torch.zeros(vocab, dtype=torch.bool),
    )
    return World(policy, guard=guard, mrm=mrm)
