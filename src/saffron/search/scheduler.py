"""Many searches stepped together (continuous batching).

Every registered method is a step function (:mod:`saffron.search.base`): a generator that asks
for policy logits, MRM reward vectors and guard rewards, and never calls a model itself. The
scheduler keeps up to ``max_searches`` of them in flight. One :meth:`Scheduler.step`:

1. admits queued searches into free places (a search joins between steps);
2. answers the asks of ALL live searches with one policy call, one MRM call and one guard call
   (each one backend call over the rows of every search; the trie shares their prefixes);
3. hands each search its rows; a search that returns leaves, and its place is free for the
   next step.

Outputs equal one-at-a-time runs (:func:`~saffron.search.base.run_search`) with the same
seeds: each search sees the same rows in the same order, and keeps its own random generator.
The only difference a shared forward can make is floating-point rounding of a row computed in
a batch of another shape; the tests check equality on the tiny model for every method.

Compute: each search is charged by its own :class:`~saffron.lm.ledger.Ledger` per model role —
what its calls would have cost alone on an empty cache, the same figures ``saffron eval``
records for one search at a time (see :mod:`saffron.lm.ledger` for the rule). The backends'
own counters hold what actually ran. Reward-model calls are counted per search as the rows it
asked for, the unit of ``Guard.calls`` and ``MultifurcationRM.calls``. The MRM answers with
reward rows (:class:`~saffron.reward.base.RewardRows`) whose entries are computed when a search
reads them; each search's part charges its own ledger for the entries it reads.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from saffron.errors import SaffronError
from saffron.lm.ledger import Ledger
from saffron.reward.base import NO_REWARDS, RewardRows
from saffron.search.base import (
    Ask,
    MethodSpec,
    Reply,
    SearchConfig,
    SearchResult,
    Steps,
    World,
    build_result,
    check_config,
    check_needs,
    get_method,
    reward_models,
)
from saffron.types import Compute, TokenSequence

_EMPTY = torch.zeros(0)


@dataclass(frozen=True)
class Finished:
    """A search that left the scheduler: its result, or the error that ended it."""

    key: Hashable
    result: SearchResult | None = None
    error: Exception | None = None


@dataclass
class _Search:
    """One search in flight (mutable: its pending ask and its ledgers)."""

    key: Hashable
    spec: MethodSpec
    steps: Steps
    ask: Ask
    ledgers: dict[str, Ledger]
    started: float
    asked: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Queued:
    key: Hashable
    spec: MethodSpec
    seq: TokenSequence
    config: SearchConfig


class Scheduler:
    """Up to ``max_searches`` searches in flight over one world; not thread-safe."""

    def __init__(self, world: World, *, max_searches: int = 16) -> None:
        if max_searches < 1:
            raise SaffronError(f"max_searches must be ≥ 1, got {max_searches}")
        self.world, self.max_searches = world, max_searches
        self._queue: deque[_Queued] = deque()
        self._live: list[_Search] = []
        self.steps_run = 0

    # --- the queue --------------------------------------------------------------------------

    def submit(self, key: Hashable, method: str, seq: TokenSequence, config: SearchConfig) -> None:
        """Queue a search; it joins at the next step with a free place. Unknown methods,
        missing models and configs the method cannot run (:func:`check_config`) are refused
        here (SaffronError), before anything is queued."""
        spec = get_method(method)
        check_needs(spec, self.world)
        check_config(spec, config)
        self._queue.append(_Queued(key, spec, seq, config))

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def live(self) -> int:
        return len(self._live)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._live

    def cancel(self, key: Hashable) -> bool:
        """Drop a queued or live search (its partial work is lost); True if it was there."""
        before = len(self._queue) + len(self._live)
        self._queue = deque(q for q in self._queue if q.key != key)
        for s in [s for s in self._live if s.key == key]:
            s.steps.close()
            self._live.remove(s)
        return len(self._queue) + len(self._live) < before

    # --- stepping ---------------------------------------------------------------------------

    def run(self) -> Iterator[Finished]:
        """Step until every queued search has finished, yielding each as it finishes."""
        while not self.idle:
            yield from self.step()

    def step(self) -> list[Finished]:
        """Admit, then answer every live search's ask with one call per model (see module doc)."""
        done = self._admit()
        if not self._live:
            return done
        live = list(self._live)
        replies = self._answer(live)
        self.steps_run += 1
        for search, reply in zip(live, replies, strict=True):
            try:
                search.ask = search.steps.send(reply)
            except StopIteration as stop:
                done.append(self._finish(search, stop.value))
            except Exception as err:  # one search's failure never stops the others
                self._live.remove(search)
                done.append(Finished(search.key, error=err))
        return done

    def _admit(self) -> list[Finished]:
        done: list[Finished] = []
        while self._queue and len(self._live) < self.max_searches:
            q = self._queue.popleft()
            ledgers = {role: b.ledger() for role, b in self.world.backends().items()}
            assert q.spec.steps is not None
            steps = q.spec.steps(self.world, q.seq, q.config)
            search = _Search(q.key, q.spec, steps, Ask(), ledgers, time.perf_counter())
            self._live.append(search)
            try:
                search.ask = next(steps)
            except StopIteration as stop:
                done.append(self._finish(search, stop.value))
            except Exception as err:
                self._live.remove(search)
                done.append(Finished(q.key, error=err))
        return done

    def _finish(self, search: _Search, outcome: object) -> Finished:
        self._live.remove(search)
        compute = Compute(
            {role: ledger.compute.copy() for role, ledger in search.ledgers.items()},
            wall_s=time.perf_counter() - search.started,
        )
        calls = {role: search.asked.get(role, 0) for role in reward_models(self.world)}
        result = build_result(self.world, search.spec, outcome, compute, calls)  # type: ignore[arg-type]
        return Finished(search.key, result=result)

    def _answer(self, live: list[_Search]) -> list[Reply]:
        """One shared call per model over the asks of ``live``; each search's rows back."""
        w = self.world
        logits = self._shared("policy", live, lambda a: a.logits, w.policy.next_logits)
        guard: dict[int, Any] = {}
        if w.guard is not None:
            guard = self._shared("guard", live, lambda a: a.guard, w.guard.score)
        mrm: dict[int, Any] = {}
        mrm_model = w.mrm
        if mrm_model is not None:
            for flag in (True, False):  # the mask is per ask; nearly always all conservative
                group = [s for s in live if s.ask.conservative is flag]
                mrm |= self._shared(
                    "mrm",
                    group,
                    lambda a: a.mrm,
                    lambda seqs, f=flag: mrm_model.reward_rows(seqs, conservative=f),  # type: ignore[misc]
                )
        return [
            Reply(logits.get(id(s), _EMPTY), mrm.get(id(s), NO_REWARDS), guard.get(id(s), _EMPTY))
            for s in live
        ]

    def _shared(
        self,
        role: str,
        searches: Sequence[_Search],
        rows_of: Callable[[Ask], tuple[TokenSequence, ...]],
        call: Callable[[Sequence[TokenSequence]], Tensor | RewardRows],
    ) -> dict[int, Any]:
        """Run ``call`` once over every search's rows for ``role``; split the output back
        (a tensor, CPU float32, or reward rows whose entries are charged to each search when
        it reads them)."""
        parts = [(s, rows_of(s.ask)) for s in searches if rows_of(s.ask)]
        if not parts:
            return {}
        flat = [seq for _, rows in parts for seq in rows]
        payers = [s.ledgers[role] for s, rows in parts for _ in rows]
        with self.world.backends()[role].charged_to(payers):
            out = call(flat)
        for s, rows in parts:
            s.asked[role] = s.asked.get(role, 0) + len(rows)
        sizes = [len(rows) for _, rows in parts]
        pieces: Sequence[Tensor | RewardRows]
        if isinstance(out, RewardRows):
            pieces = out.split(sizes, [s.ledgers[role] for s, _ in parts])
        else:
            pieces = torch.split(out.float().cpu(), sizes)
        return {id(s): piece for (s, _), piece in zip(parts, pieces, strict=True)}
