"""The search interface: one signature for every method, a registry, the result type.

A method is written once, as a *step function* ``(world, sequence, config) -> Steps``: a
generator that yields an :class:`Ask` (the sequences it needs scored by the policy, the MRM and
the guard), receives the matching :class:`Reply`, and finally returns an :class:`Outcome`. It
never calls a model itself. Two drivers answer the asks:

* :func:`drive` answers each ask with its own model calls: one search at a time. The
  registered function ``(world, sequence, config) -> SearchResult`` is this driver around the
  step function, metered by the backends' counters.
* :class:`saffron.search.scheduler.Scheduler` answers the asks of many searches with ONE call
  per model per step (continuous batching), charging each search by a ledger.

``world`` holds the policy and the reward models the method may use; ``sequence`` is the
policy's input (prompt segments and prefill, nothing generated); ``config`` is a
:class:`SearchConfig`. Methods register themselves by name with :func:`register`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from saffron.errors import SaffronError
from saffron.lm.backend import Backend
from saffron.lm.policy import Policy
from saffron.reward.base import NO_REWARDS, Guard, MultifurcationRM, RewardRows
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


CLI_LOGP_FLOOR = 4.0
"""δ (nats) the command line gives saffron and beam unless told otherwise: chosen on the
validation split (train-split prompts no model trained on) against β = 0.2, β = 1 and the
paper's rule, as the setting with the most answers both safe and coherent (BENCHMARKS.md,
"Saffron that stays fluent")."""

CLI_NO_REPEAT_NGRAM = 3
"""n of the repeat ban the command line gives saffron and beam unless told otherwise (chosen on
the validation split, BENCHMARKS.md "Saffron that stays fluent")."""

CLI_GATE = 0.0
"""τ of the gate the command line gives saffron unless told otherwise: 0 is the guard's own
boundary between safe and unsafe (chosen on the validation split)."""

CLI_GATE_STEPS = 2
"""k of the gate the command line gives saffron (chosen on the validation split)."""


@dataclass(frozen=True)
class SearchConfig:
    """Settings shared by all methods. ``budget`` is each method's width/samples knob.

    Paper defaults: max_new_tokens 32, min_new_tokens 16 (EOS forbidden before), top-p 0.8.

    ``logp_weight`` (β) and ``logp_floor`` (δ) change how the methods that rank children by
    reward (``saffron``, ``beam``; :attr:`MethodSpec.ranks_children`) choose them, to keep the
    search on the policy's distribution (see :mod:`saffron.search.common`):

    * a candidate's score is reward + β · log π(generated), the policy's log-probability of
      everything generated (KL-regularised selection, as in controlled decoding);
    * a child whose token is more than δ nats less probable than the policy's most probable
      token at the same position is never a child.

    The defaults here, β = 0 and no floor, are the paper's rule (rank by reward alone), so a
    library caller gets the paper's search. The command line (``generate``, ``eval``,
    ``visit``, ``demo``) applies :data:`CLI_LOGP_FLOOR` to the methods that rank children
    unless told ``--logp-floor none``.
    """

    budget: int = 1
    """Each method's width / samples knob (see ``saffron methods``); at least 1."""
    max_new_tokens: int = 32
    """Longest answer, in new tokens (the paper's 32)."""
    min_new_tokens: int = 16
    """Stop tokens are forbidden before this many new tokens (the paper's 16)."""
    top_p: float = 0.8
    """Nucleus of sampling and of Saffron's children, in (0, 1] (the paper's 0.8)."""
    temperature: float = 1.0
    """Softmax temperature of sampling, > 0."""
    seed: int = 0
    """Seeds every random draw of the search."""
    options: tuple[tuple[str, Any], ...] = ()
    """Method-specific (key, value) options, e.g. ``(("children", 4),)``."""
    logp_weight: float = 0.0
    """β of the selection rule (saffron, beam): score = reward + β·log π; ≥ 0, 0 = the paper's."""
    logp_floor: float | None = None
    """δ of the selection rule (saffron, beam): no child δ nats below the best; None = none."""
    reward_cap: float | None = None
    """τ of the selection rule (saffron, beam): a reward above τ counts as τ, so among children
    that are safe enough the policy's own log-probability decides (satisficing instead of
    maximising a safety reward, which on a benign request prefers a refusal); None = no cap."""
    no_repeat_ngram: int | None = None
    """n of the repeat ban (saffron, beam): no child whose token would repeat an n-gram already
    in the answer (prefill and generated tokens), the loops a reward model overrates; None =
    no ban."""
    gate: float | None = None
    """τ of the gate (methods that gate, :attr:`MethodSpec.gates`): follow the policy's most
    probable child while the reward model scores it ≥ τ, and search only from the first step
    where it does not, so an answer that stays safe is the policy's own; None = search from
    the first token (the paper's)."""
    gate_steps: int = 1
    """k of the gate: it opens when k of the policy's choices in a row score below τ (unseen
    tokens skipped), and the search starts before the first of them."""

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
        if not _finite_non_negative(self.logp_weight):
            raise SaffronError(f"logp_weight must be a finite number ≥ 0, got {self.logp_weight!r}")
        if self.reward_cap is not None and not math.isfinite(self.reward_cap):
            raise SaffronError(
                f"reward_cap must be a finite number (or unset), got {self.reward_cap!r}"
            )
        if self.gate is not None and not math.isfinite(self.gate):
            raise SaffronError(f"gate must be a finite number (or unset), got {self.gate!r}")
        k = self.gate_steps
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SaffronError(f"gate_steps must be an integer ≥ 1, got {k!r}")
        n = self.no_repeat_ngram
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise SaffronError(f"no_repeat_ngram must be an integer ≥ 1 (or unset), got {n!r}")
        if self.logp_floor is not None and not _finite_non_negative(self.logp_floor):
            got = self.logp_floor
            raise SaffronError(
                f"logp_floor must be a finite number of nats ≥ 0 (or unset), got {got!r}"
            )

    @property
    def paper_selection(self) -> bool:
        """Whether children are ranked by reward alone (no β, floor, cap, repeat ban or gate):
        the paper's rule."""
        return self.rule() == _PAPER_RULE

    def rule(self) -> tuple[float | int | None, ...]:
        """(β, δ, τ cap, repeat n, gate τ): the selection rule's settings, in that order."""
        return (
            self.logp_weight,
            self.logp_floor,
            self.reward_cap,
            self.no_repeat_ngram,
            self.gate,
        )

    def selection(self) -> dict[str, float | None]:
        """β and δ, and the cap, the repeat ban and the gate where set, as a record
        (``extra["selection"]`` of the methods that use them)."""
        rule: dict[str, float | None] = {
            "logp_weight": self.logp_weight,
            "logp_floor": self.logp_floor,
        }
        later = {
            "reward_cap": self.reward_cap,
            "no_repeat_ngram": self.no_repeat_ngram,
            "gate": self.gate,
            "gate_steps": None if self.gate is None else self.gate_steps,
        }
        # absent when unset: records made before these settings existed still match
        rule.update({k: v for k, v in later.items() if v is not None})
        return rule

    def option(self, key: str, default: Any) -> Any:
        return dict(self.options).get(key, default)


_PAPER_RULE: tuple[float | int | None, ...] = (0.0, None, None, None, None)
""":meth:`SearchConfig.rule` of the paper's selection (reward alone, search from the start)."""


def _finite_non_negative(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0


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


@dataclass(frozen=True)
class Ask:
    """What a search needs before its next step: next-token logits of ``logits`` from the
    policy, reward vectors of ``mrm`` from the MRM (``conservative``: unseen tokens −∞, Eq. 7),
    outcome rewards of ``guard`` from the guard. Any may be empty; the parts are independent,
    so a driver may compute them in any order or batch them with other searches' asks."""

    logits: tuple[TokenSequence, ...] = ()
    mrm: tuple[TokenSequence, ...] = ()
    guard: tuple[TokenSequence, ...] = ()
    conservative: bool = True


@dataclass(frozen=True)
class Reply:
    """The answer to an :class:`Ask`, CPU float32, one row per asked sequence, in order:
    ``logits`` (len(ask.logits), V) raw (no stop-token rule applied), ``mrm``
    (len(ask.mrm), V) read entry by entry (:class:`~saffron.reward.base.RewardRows`: a search
    reads only its children's entries, and an MRM computes only those), ``guard``
    (len(ask.guard),)."""

    logits: Tensor
    mrm: RewardRows
    guard: Tensor


@dataclass(frozen=True)
class Outcome:
    """What a step function returns: the answer, the reward the search saw for it (−∞: none),
    and method-specific details for ``SearchResult.extra``."""

    sequence: TokenSequence
    reward: float = float("-inf")
    extra: dict[str, Any] = field(default_factory=dict)


Steps = Generator[Ask, Reply, Outcome]
StepFn = Callable[[World, TokenSequence, SearchConfig], Steps]
SearchFn = Callable[[World, TokenSequence, SearchConfig], SearchResult]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method. ``steps`` is its one implementation; ``fn`` runs it alone.

    ``min_budget``: the smallest budget at which the method searches (below it, it would
    return what plain decoding returns while billed for a search); ``min_budget_why`` says why.
    ``ranks_children``: the method ranks children by reward and honours
    :attr:`SearchConfig.logp_weight` / :attr:`SearchConfig.logp_floor`.
    """

    name: str
    """The registry name (``saffron methods``, ``--method``)."""
    fn: SearchFn
    """Runs one search alone (the step function under :func:`drive`, metered)."""
    description: str
    """One line for ``saffron methods``."""
    budget_meaning: str
    """What ``budget`` counts for this method (samples, beam width, …)."""
    needs_guard: bool = False
    """Whether the method calls a guard."""
    needs_mrm: bool = False
    """Whether the method calls an MRM."""
    steps: StepFn | None = None
    """The step function, the method's one implementation."""
    min_budget: int = 1
    """The smallest budget at which the method is a search, not plain decoding."""
    min_budget_why: str = ""
    """Why a smaller budget is refused (the end of its error message)."""
    ranks_children: bool = False
    """Whether the method ranks children by reward and honours ``logp_weight``/``logp_floor``."""
    gates: bool = False
    """Whether the method honours :attr:`SearchConfig.gate` (follows the policy until the reward
    model scores its most probable child below τ)."""

    @property
    def uses_reward_model(self) -> bool:
        """Whether results report reward-model calls (methods without one report none)."""
        return self.needs_guard or self.needs_mrm


METHODS: dict[str, MethodSpec] = {}


def register(
    name: str,
    description: str,
    budget_meaning: str,
    *,
    needs_guard: bool = False,
    needs_mrm: bool = False,
    min_budget: int = 1,
    min_budget_why: str = "",
    ranks_children: bool = False,
    gates: bool = False,
) -> Callable[[StepFn], SearchFn]:
    """Register a step function under ``name``; returns its one-at-a-time :data:`SearchFn`
    (fields as in :class:`MethodSpec`)."""

    def deco(steps: StepFn) -> SearchFn:
        def fn(world: World, seq: TokenSequence, cfg: SearchConfig) -> SearchResult:
            return run_alone(METHODS[name], world, seq, cfg)

        fn.__name__, fn.__doc__ = steps.__name__, steps.__doc__
        spec = MethodSpec(
            name,
            fn,
            description,
            budget_meaning,
            needs_guard,
            needs_mrm,
            steps,
            min_budget,
            min_budget_why,
            ranks_children,
            gates,
        )
        METHODS[name] = spec
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


NEEDS = {"guard": "a guard model", "mrm": "a multifurcation reward model (MRM)"}


def missing(method: str, role: str) -> SaffronError:
    """The error for a world without the ``role`` (``guard`` or ``mrm``) that ``method`` needs:
    the one message both :func:`check_needs` and a step function's own check give."""
    return SaffronError(f"method {method!r} needs {NEEDS[role]}")


def check_needs(spec: MethodSpec, world: World) -> None:
    """SaffronError when ``world`` lacks a model the method needs."""
    if spec.needs_guard and world.guard is None:
        raise missing(spec.name, "guard")
    if spec.needs_mrm and world.mrm is None:
        raise missing(spec.name, "mrm")


def check_budget(spec: MethodSpec, budget: int) -> None:
    """SaffronError when ``budget`` is below the smallest at which the method searches."""
    if budget < spec.min_budget:
        why = f": {spec.min_budget_why}" if spec.min_budget_why else ""
        raise SaffronError(
            f"method {spec.name!r} needs a budget ≥ {spec.min_budget}, got {budget}{why}"
        )


def check_config(spec: MethodSpec, cfg: SearchConfig) -> None:
    """SaffronError when ``cfg`` asks the method for what it cannot do: a budget at which it
    would not search. (A method that ranks no children ignores ``logp_weight`` and
    ``logp_floor``; :func:`check_rule_used` refuses them where a user set them.)"""
    check_budget(spec, cfg.budget)


def check_rule_used(spec: MethodSpec, cfg: SearchConfig) -> None:
    """SaffronError when ``cfg``'s selection rule is not the default one and ``spec`` ranks no
    children, so the rule a user asked for would be silently ignored."""
    if not spec.ranks_children and cfg.rule() != _PAPER_RULE:
        users = ", ".join(sorted(m.name for m in METHODS.values() if m.ranks_children))
        raise SaffronError(
            f"method {spec.name!r} ranks no children; logp_weight, logp_floor, reward_cap, "
            f"no_repeat_ngram and gate apply to: {users}"
        )
    if not spec.gates and cfg.gate is not None:
        users = ", ".join(sorted(m.name for m in METHODS.values() if m.gates))
        raise SaffronError(f"method {spec.name!r} has no gate; gate applies to: {users}")


def run_search(name: str, world: World, seq: TokenSequence, config: SearchConfig) -> SearchResult:
    """Check the method's needs and config, then run it alone."""
    spec = get_method(name)
    check_needs(spec, world)
    return spec.fn(world, seq, config)


# --- driving step functions -----------------------------------------------------------------

_EMPTY = torch.zeros(0)


def answer(world: World, ask: Ask) -> Reply:
    """Answer ``ask`` with one call per model it names (empty parts cost nothing)."""
    logits = world.policy.next_logits(ask.logits).float().cpu() if ask.logits else _EMPTY
    mrm, guard = NO_REWARDS, _EMPTY
    if ask.mrm:
        assert world.mrm is not None, "a search asked the MRM of a world without one"
        mrm = world.mrm.reward_rows(ask.mrm, conservative=ask.conservative)
    if ask.guard:
        assert world.guard is not None, "a search asked the guard of a world without one"
        guard = world.guard.score(ask.guard).float().cpu()
    return Reply(logits, mrm, guard)


def drive(world: World, steps: Steps) -> Outcome:
    """Run a step function to its end, answering each ask with :func:`answer`."""
    try:
        ask = next(steps)
        while True:
            ask = steps.send(answer(world, ask))
    except StopIteration as stop:
        return stop.value


def build_result(
    world: World,
    spec: MethodSpec,
    outcome: Outcome,
    compute: Compute,
    reward_calls: dict[str, int],
) -> SearchResult:
    """The :class:`SearchResult` of a finished search."""
    policy, gen = world.policy, outcome.sequence.generated
    return SearchResult(
        method=spec.name,
        sequence=outcome.sequence,
        text=policy.chat.decode(gen),
        reward=outcome.reward if math.isfinite(outcome.reward) else None,
        finished=bool(gen) and gen[-1] in policy.chat.eos_ids,
        compute=compute,
        reward_calls=dict(reward_calls) if spec.uses_reward_model else {},
        extra=dict(outcome.extra),
    )


def run_alone(
    spec: MethodSpec, world: World, seq: TokenSequence, cfg: SearchConfig
) -> SearchResult:
    """Run one search by itself, metered by the backends' counters."""
    assert spec.steps is not None
    check_config(spec, cfg)
    with measured(world) as meter:
        outcome = drive(world, spec.steps(world, seq, cfg))
    return build_result(world, spec, outcome, meter.compute, meter.reward_calls)


@dataclass
class Meter:
    """Compute per model role and reward-model calls, filled in when :func:`measured` exits."""

    compute: Compute
    reward_calls: dict[str, int] = field(default_factory=dict)


def reward_models(world: World) -> dict[str, Any]:
    """The world's reward models by role (``guard``, ``mrm``), those it has."""
    return {role: m for role, m in (("guard", world.guard), ("mrm", world.mrm)) if m is not None}


@contextmanager
def measured(world: World) -> Iterator[Meter]:
    """Like :func:`metered`, and also count the reward models' ``calls`` spent in the block.

    A guard's ``calls`` counts scored (prompt, response) pairs, an MRM's scored sequences: the
    units in which the paper counts PRM and MRM calls.
    """
    models = reward_models(world)
    before = {role: int(getattr(m, "calls", 0)) for role, m in models.items()}
    with metered(world) as compute:
        meter = Meter(compute)
        try:
            yield meter
        finally:
            meter.reward_calls = {
                role: int(getattr(m, "calls", 0)) - before[role] for role, m in models.items()
            }
