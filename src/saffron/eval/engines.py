"""Who runs an evaluation's models: this process, or Ray workers (:mod:`saffron.cluster`).

The driver (:func:`saffron.eval.run.run_eval`) decides what to run and writes every file; an
engine computes. Both engines run the same :class:`EvalWorker` — in this process, or one per
Ray actor — so a record does not depend on where it was computed: every search starts from a
cleared cache with its own seed, and the harmful answers an attack needs are made in the same
batches (:func:`saffron.eval.attack.answer_batch`).

Engine contract (:class:`Engine`): ``answers`` yields one list per batch, in any order;
``prefill_lines`` returns one ``prefills.jsonl`` line per row, in order; ``records`` yields one
record per (row, method, budget), in the order they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol

from saffron.cluster import ClusterConfig, Workers, worker_runtime
from saffron.data import PromptRow
from saffron.eval.attack import AnswerConfig, HarmfulAnswer, answer_batch, parse_attack
from saffron.eval.run import EvalConfig, Todo, choose_prefill, clear, costed, iter_records
from saffron.lm.policy import Policy, load_policy
from saffron.runtime import CPU, RuntimeConfig
from saffron.search import World

WorldFactory = Callable[[EvalConfig], World]
Prefills = dict[str, list[int] | None]


class EvalWorker:
    """The models of one evaluation in one process, built on first use by
    ``world_factory(cfg)`` (the guard billed as ``cfg.guard_cost`` says,
    :func:`~saffron.eval.run.costed`); the attack policy (when it is not the policy) is loaded
    with ``runtime`` on first use."""

    def __init__(
        self,
        cfg: EvalConfig,
        world_factory: WorldFactory,
        runtime: RuntimeConfig = CPU,
        concurrency: int = 1,
    ) -> None:
        self.cfg, self.world_factory = cfg, world_factory
        self.runtime, self.concurrency = runtime, concurrency
        self._world: World | None = None
        self._attacker: Policy | None = None

    @property
    def world(self) -> World:
        if self._world is None:
            self._world = costed(self.world_factory(self.cfg), self.cfg)
        return self._world

    def attacker(self) -> Policy:
        """The policy that writes harmful answers (``cfg.attack_policy``)."""
        if self.cfg.attack_policy == self.cfg.policy:
            return self.world.policy
        if self._attacker is None:
            self._attacker = load_policy(self.cfg.attack_policy, self.runtime)
        return self._attacker

    def answer_batch(self, rows: list[PromptRow]) -> list[HarmfulAnswer]:
        """Harmful answers of one batch of rows (every cache cleared first)."""
        clear(self.world)
        return answer_batch(self.attacker(), rows, AnswerConfig(seed=self.cfg.seed))

    def prefill_lines(
        self, rows: list[PromptRow], answers: dict[str, str | None]
    ) -> list[dict[str, Any]]:
        """One ``prefills.jsonl`` line per row: its prefill tokens (None: skipped) and text."""
        chat, attack = self.world.policy.chat, parse_attack(self.cfg.attack)
        out = []
        for row in rows:
            toks = choose_prefill(chat, row, attack, answers.get(row.id))
            text = None if toks is None else chat.decode(tuple(toks))
            out.append({"prompt_id": row.id, "tokens": toks, "text": text})
        return out

    def iter_records(self, todo: list[Todo], prefills: Prefills) -> Iterator[dict[str, Any]]:
        return iter_records(self.world, todo, prefills, self.cfg, self.concurrency)

    def records(self, todo: list[Todo], prefills: Prefills) -> list[dict[str, Any]]:
        return list(self.iter_records(todo, prefills))


class Engine(Protocol):
    """Computes for the driver (module doc)."""

    def answers(self, batches: list[list[PromptRow]]) -> Iterator[list[HarmfulAnswer]]: ...

    def prefill_lines(
        self, rows: list[PromptRow], answers: dict[str, str | None]
    ) -> list[dict[str, Any]]: ...

    def records(self, todo: list[Todo], prefills: Prefills) -> Iterator[dict[str, Any]]: ...


class LocalEngine:
    """One :class:`EvalWorker` in this process; records stream as searches finish."""

    def __init__(self, worker: EvalWorker) -> None:
        self.worker = worker

    def answers(self, batches: list[list[PromptRow]]) -> Iterator[list[HarmfulAnswer]]:
        return (self.worker.answer_batch(b) for b in batches)

    def prefill_lines(
        self, rows: list[PromptRow], answers: dict[str, str | None]
    ) -> list[dict[str, Any]]:
        return self.worker.prefill_lines(rows, answers)

    def records(self, todo: list[Todo], prefills: Prefills) -> Iterator[dict[str, Any]]:
        return self.worker.iter_records(todo, prefills)


class RayEngine:
    """One :class:`EvalWorker` per Ray actor. Records are handed out in groups of
    ``concurrency`` (searches one actor runs together); a group's records arrive together."""

    def __init__(self, workers: Workers, concurrency: int) -> None:
        self.workers, self.concurrency = workers, concurrency

    def answers(self, batches: list[list[PromptRow]]) -> Iterator[list[HarmfulAnswer]]:
        return (got for _, got in self.workers.map("answer_batch", [(b,) for b in batches]))

    def prefill_lines(
        self, rows: list[PromptRow], answers: dict[str, str | None]
    ) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = self.workers.call("prefill_lines", rows, answers)
        return lines

    def records(self, todo: list[Todo], prefills: Prefills) -> Iterator[dict[str, Any]]:
        k = self.concurrency
        groups = [todo[i : i + k] for i in range(0, len(todo), k)]
        calls = [(g, {row.id: prefills[row.id] for row, _, _ in g}) for g in groups]
        for _, recs in self.workers.map("records", calls):
            yield from recs


@contextmanager
def open_engine(
    cfg: EvalConfig,
    world_factory: WorldFactory,
    runtime: RuntimeConfig,
    concurrency: int,
    cluster: ClusterConfig | None,
) -> Iterator[Engine]:
    """A :class:`LocalEngine`, or with ``cluster`` a :class:`RayEngine` whose workers are
    started on entry and stopped on exit."""
    if cluster is None:
        yield LocalEngine(EvalWorker(cfg, world_factory, runtime, concurrency))
        return
    there = worker_runtime(runtime, cluster)
    make = partial(EvalWorker, cfg, world_factory, there, concurrency)
    with Workers(cluster, partial(_applied, make)) as workers:
        yield RayEngine(workers, concurrency)


def _applied(make: Callable[[], EvalWorker]) -> EvalWorker:
    """``make()`` after the worker's runtime is applied (device checked, threads set) in the
    process that will run it."""
    worker = make()
    worker.runtime.apply()
    worker.world  # noqa: B018  (load the models now, before the first call is timed)
    return worker
