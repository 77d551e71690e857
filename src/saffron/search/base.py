"""The search interface: one signature for every method, a registry, the result type.

A method is a function ``(world, sequence, config) -> SearchResult``. ``world`` holds the policy
and the reward models the method may use; ``sequence`` is the policy's input (prompt segments
and prefill, nothing generated); ``config`` is a :class:`SearchConfig`. Methods register
themselves by name with :func:`register`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from saffron.errors import SaffronError
from saffron.lm.backend import Backend
from saffron.lm.policy import Policy
from saffron.reward.base import Guard, MultifurcationRM
from saffron.types import Compute, TokenSequence


@dataclass
class World:
    """The models a search may call. ``guard`` and ``mrm`` are optional per method."""

    policy: Policy
    guard: Guard | None = None
    mrm: MultifurcationRM | None = None

    def backends(self) -> dict[str, Backend]:
        roles: dict[str, Backend] = {"policy": self.policy.backend}
        if self.guard is not None:
            roles["guard"] = self.guard.backend
        if self.mrm is not None:
            roles["mrm"] = self.mrm.backend
        return roles


@dataclass(frozen=True)
class SearchConfig:
    """Settings shared by all methods. ``budget`` is each method's width/samples knob.

    Paper defaults: max_new_tokens 32, min_new_tokens 16 (EOS forbidden before), top-p 0.8.
    """

    budget: int = 1
    max_new_tokens: int = 32
    min_new_tokens: int = 16
    top_p: float = 0.8
    temperature: float = 1.0
    seed: int = 0
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.budget, int) or self.budget < 1:
            raise SaffronError(f"budget must be a positive integer, got {self.budget!r}")
        if self.max_new_tokens < 1:
            raise SaffronError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.min_new_tokens < 0 or self.min_new_tokens > self.max_new_tokens:
            raise SaffronError(
                f"min_new_tokens ({self.min_new_tokens}) must be between 0 and "
                f"max_new_tokens ({self.max_new_tokens})"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise SaffronError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise SaffronError(f"temperature must be > 0, got {self.temperature}")

    def option(self, key: str, default: Any) -> Any:
        return dict(self.options).get(key, default)


@dataclass
class SearchResult:
    """What a method returns: the answer, the reward it saw, and what it cost."""

    method: str
    sequence: TokenSequence
    text: str
    reward: float | None
    finished: bool
    compute: Compute
    reward_calls: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def generated(self) -> tuple[int, ...]:
        return self.sequence.generated

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "text": self.text,
            "tokens": list(self.sequence.generated),
            "prefill_tokens": list(self.sequence.prefill),
            "reward": self.reward,
            "finished": self.finished,
            "reward_calls": dict(self.reward_calls),
            "compute": self.compute.to_dict(),
            **({"extra": self.extra} if self.extra else {}),
        }


SearchFn = Callable[[World, TokenSequence, SearchConfig], SearchResult]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: SearchFn
    description: str
    budget_meaning: str
    needs_guard: bool = False
    needs_mrm: bool = False


METHODS: dict[str, MethodSpec] = {}


def register(
    name: str,
    description: str,
    budget_meaning: str,
    *,
    needs_guard: bool = False,
    needs_mrm: bool = False,
) -> Callable[[SearchFn], SearchFn]:
    def deco(fn: SearchFn) -> SearchFn:
        METHODS[name] = MethodSpec(name, fn, description, budget_meaning, needs_guard, needs_mrm)
        return fn

    return deco


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise SaffronError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


@contextmanager
def metered(world: World) -> Iterator[Compute]:
    """Measure the compute spent inside the block, per model role, and its wall time.

    The yielded :class:`Compute` is filled in when the block exits.
    """
    backends = world.backends()
    before = {role: b.compute.copy() for role, b in backends.items()}
    out = Compute()
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out.wall_s = time.perf_counter() - t0
        out.per_model = {role: backends[role].compute.minus(before[role]) for role in backends}


def run_search(name: str, world: World, seq: TokenSequence, config: SearchConfig) -> SearchResult:
    """Check the method's needs, then run it."""
    spec = get_method(name)
    if spec.needs_guard and world.guard is None:
        raise SaffronError(f"method {name!r} needs a guard model")
    if spec.needs_mrm and world.mrm is None:
        raise SaffronError(f"method {name!r} needs a multifurcation reward model (MRM)")
    return spec.fn(world, seq, config)
