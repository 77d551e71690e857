"""World factories for Ray workers in tests: importable by the workers (the test puts this
folder on their PYTHONPATH), picklable by reference, deterministic."""

from __future__ import annotations

import os
from pathlib import Path

from saffron.eval.run import EvalConfig
from saffron.lm.backend import TrieBackend
from saffron.lm.models import LoadedModel, load_model, tiny_random_llama
from saffron.lm.policy import make_policy
from saffron.reward.guard import ReadoutGuard
from saffron.search import World


class Killed(Exception):
    """The run stopped on purpose."""


def tiny_world(cfg: EvalConfig | None = None) -> World:
    """The tiny policy and a tiny readout guard (another seed), built in code."""
    policy = make_policy(load_model("tiny-random-llama"))
    model, tok = tiny_random_llama(seed=5)
    guard = ReadoutGuard(
        TrieBackend(LoadedModel("tiny-guard", model, tok)),
        name="tiny-guard",
        policy_tokenizer=policy.chat.tokenizer,
        safe_word="s",
        unsafe_word="u",
    )
    return World(policy, guard=guard)


def failing_world(cfg: EvalConfig, marker: str, after: int, how: str) -> World:
    """:func:`tiny_world` whose guard, on its ``after``-th verdict, fails once for the whole
    run (the first process to get there creates ``marker``): ``how="exit"`` kills the worker's
    process, ``how="raise"`` raises :class:`Killed` (the run stops)."""
    world = tiny_world(cfg)
    assert world.guard is not None
    real, count = world.guard.score, {"n": 0}

    def score(seqs):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == after and _first(Path(marker)):
            if how == "exit":
                os._exit(3)
            raise Killed()
        return real(seqs)

    world.guard.score = score  # type: ignore[method-assign]
    return world


def _first(marker: Path) -> bool:
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True
