"""The engine: one worker thread owns the models; requests wait in a bounded queue.

Contract:

* Model calls are not thread-safe, so every search and every guard verdict runs on a single
  worker thread (a one-thread executor); the event loop only queues and awaits.
* :meth:`Engine.submit` either admits a job into the queue or raises :class:`QueueFull` at
  once; the queue never grows past ``queue_size`` waiting jobs.
* A job whose client went away is cancelled with :meth:`Job.cancel`: a queued job leaves the
  queue and never runs; a running search stops at its next policy step (every method asks the
  policy for next-token logits once per step, and that call checks the flag) and its partial
  work is dropped.
* Greedy jobs with the same token limits that are waiting together run as one batch of up to
  ``max_batch`` sequences (one decoding loop, one forward per step). Other methods run one
  request at a time; :class:`saffron.search.scheduler.Scheduler` steps any methods of many
  requests together (``submit`` on arrival, ``step`` on the worker, ``cancel``), the seam for
  batching them here.
* Requests share the models and their trie caches; nothing is cleared between requests, so a
  request pays only for the positions not already cached.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from torch import Tensor

from saffron.errors import SaffronError
from saffron.lm.policy import Policy
from saffron.search import SearchConfig, SearchResult, World, run_search
from saffron.search.base import metered
from saffron.search.decoding import decode_batch, ended_by_eos
from saffron.types import Compute, ModelCompute, TokenSequence

log = logging.getLogger("saffron.serve")
QUEUE_SIZE = 64  # waiting requests beyond which a new one gets 429


class QueueFull(Exception):
    """The queue holds ``queue_size`` jobs; ``retry_after`` is a wait estimate in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the request queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside the worker when a running job's client went away."""


@dataclass
class Verdict:
    """The guard's judgement of a final answer (not counted in the request's compute)."""

    reward: float
    unsafe: bool


@dataclass
class Outcome:
    """A finished job: the search result, the guard's verdict, time spent queued."""

    result: SearchResult
    verdict: Verdict | None
    queue_s: float


@dataclass(eq=False)
class Job:
    """One request's search. ``future`` is resolved on the event loop with an
    :class:`Outcome`, or with an exception (SaffronError for bad options, Cancelled)."""

    method: str
    seq: TokenSequence
    config: SearchConfig
    future: asyncio.Future[Outcome]
    created: float = field(default_factory=time.perf_counter)
    started: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    def batch_key(self) -> tuple[int, int] | None:
        """Jobs with equal non-None keys may share a batch (greedy, same token limits)."""
        if self.method != "greedy":
            return None
        return (self.config.max_new_tokens, self.config.min_new_tokens)


@dataclass
class _CheckedPolicy(Policy):
    """``inner`` with a cancellation check before each step's logits (searches never see a
    difference otherwise: same backend, same chat format)."""

    inner: Policy | None = None
    check: Callable[[], None] = lambda: None

    def next_logits(self, seqs: Sequence[TokenSequence]) -> Tensor:
        self.check()
        assert self.inner is not None
        return self.inner.next_logits(seqs)


def checked_world(world: World, jobs: Sequence[Job]) -> World:
    """``world`` whose policy raises :class:`Cancelled` once every job in ``jobs`` is cancelled."""

    def check() -> None:
        if all(j.cancelled.is_set() for j in jobs):
            raise Cancelled()

    policy = _CheckedPolicy(world.policy.backend, world.policy.chat, world.policy, check)
    return World(policy, guard=world.guard, mrm=world.mrm)


def _scaled(c: ModelCompute, w: float) -> ModelCompute:
    return ModelCompute(
        tokens_computed=round(c.tokens_computed * w),
        tokens_reused=round(c.tokens_reused * w),
        flops=c.flops * w,
        calls=c.calls,
        sequences=round(c.sequences * w),
        forwards=c.forwards,
    )


def share(compute: Compute, weights: Sequence[float]) -> list[Compute]:
    """Split a batch's compute among its requests in proportion to ``weights`` (each request's
    token count: its share of the batched forwards). Calls and forwards are shared, so each
    request reports all of them; wall time is the batch's."""
    total = sum(weights) or 1.0
    return [
        Compute({r: _scaled(m, w / total) for r, m in compute.per_model.items()}, compute.wall_s)
        for w in weights
    ]


# --- work on the worker thread ---------------------------------------------------------------


def greedy_batch(world: World, jobs: Sequence[Job]) -> list[SearchResult]:
    """Greedy answers for ``jobs`` (equal :meth:`Job.batch_key`) in one decoding loop."""
    policy = checked_world(world, jobs).policy
    with metered(world) as compute:
        outs = decode_batch(policy, [j.seq for j in jobs], jobs[0].config, greedy=True)
    parts = share(compute, [float(len(s)) for s in outs])
    return [
        SearchResult(
            method="greedy",
            sequence=s,
            text=world.policy.chat.decode(s.generated),
            reward=None,
            finished=ended_by_eos(s, world.policy),
            compute=c,
        )
        for s, c in zip(outs, parts, strict=True)
    ]


def judge(world: World, results: Sequence[SearchResult]) -> list[Verdict | None]:
    """The guard's verdict on each final answer, in one call (as ``saffron eval`` judges)."""
    if world.guard is None:
        return [None] * len(results)
    rewards = world.guard.score([r.sequence for r in results]).tolist()
    return [Verdict(float(x), float(x) < 0) for x in rewards]


def work(world: World, jobs: Sequence[Job]) -> list[tuple[SearchResult, Verdict | None]]:
    """Run ``jobs`` (one job, or a greedy batch) and judge their answers. Worker thread only.

    Raises Cancelled when every job was cancelled before it finished, SaffronError for a
    request the method refuses (e.g. a bad option).
    """
    if len(jobs) == 1:
        job = jobs[0]
        results = [run_search(job.method, checked_world(world, jobs), job.seq, job.config)]
    else:
        results = greedy_batch(world, jobs)
    return list(zip(results, judge(world, results), strict=True))


# --- the engine on the event loop ------------------------------------------------------------


class Engine:
    """The request queue in front of the worker thread (see the module docstring).

    Bound to the event loop of its first :meth:`submit`; :meth:`close` stops it.
    """

    def __init__(self, world: World, *, queue_size: int = QUEUE_SIZE, max_batch: int = 1) -> None:
        if queue_size < 1 or max_batch < 1:
            raise SaffronError("queue size and max concurrency must be ≥ 1")
        self.world, self.queue_size, self.max_batch = world, queue_size, max_batch
        self._pending: deque[Job] = deque()
        self._current: list[Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="saffron-worker")
        self._service_s = 1.0  # running mean of a batch's service time (Retry-After)

    @property
    def depth(self) -> int:
        """Jobs waiting in the queue (not running)."""
        return len(self._pending)

    @property
    def running(self) -> int:
        return len(self._current)

    def retry_after(self) -> int:
        """Seconds until a queue slot is likely free (≥ 1)."""
        return max(1, math.ceil(self._service_s * (self.depth + 1) / self.max_batch))

    def submit(self, method: str, seq: TokenSequence, config: SearchConfig) -> Job:
        """Queue a job, or raise QueueFull without queueing it."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        if len(self._pending) >= self.queue_size:
            raise QueueFull(self.retry_after())
        job = Job(method, seq, config, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        assert self._wake is not None
        self._wake.set()
        return job

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job if queued, stop it at its next step if running."""
        job.cancel()
        if job in self._pending:
            self._pending.remove(job)
        if not job.future.done():
            job.future.cancel()

    async def close(self) -> None:
        """Cancel every job, stop the dispatcher, release the worker thread."""
        for job in [*self._pending, *self._current]:
            self.cancel(job)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._run(self._take())

    def _take(self) -> list[Job]:
        """The next job, with up to max_batch − 1 waiting jobs of the same batch key."""
        batch = [self._pending.popleft()]
        key = batch[0].batch_key()
        if key is not None:
            for job in list(self._pending):
                if len(batch) >= self.max_batch:
                    break
                if job.batch_key() == key:
                    self._pending.remove(job)
                    batch.append(job)
        return batch

    async def _run(self, jobs: list[Job]) -> None:
        t0 = time.perf_counter()
        for job in jobs:
            job.started = t0
        self._current = jobs
        loop = asyncio.get_running_loop()
        try:
            outs = await loop.run_in_executor(self._executor, work, self.world, jobs)
        except Cancelled:
            for job in jobs:
                self.cancel(job)
        except Exception as err:  # handed to each request; the loop keeps serving
            if not isinstance(err, SaffronError):
                log.exception("search failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)
        else:
            for job, (result, verdict) in zip(jobs, outs, strict=True):
                if not job.future.done():
                    job.future.set_result(Outcome(result, verdict, t0 - job.created))
        finally:
            self._current = []
            self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - t0)
