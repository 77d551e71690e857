"""Ray as the engine past one process: model-holding workers that a driver hands work to.

``saffron eval --ray`` and ``saffron label --ray`` start one Ray actor per worker. Each actor
builds its object once (``make()``: it loads the models) and then answers calls of its
methods; the driver hands out calls, a few per worker at a time, and receives the results in
the order they finish. The driver alone writes files, through the same atomic, resumable path
as a run in one process, so a Ray run that is killed resumes like a local one, and workers
need no shared filesystem.

Addresses (``--ray ADDRESS``):

* ``local`` — start a private Ray instance on this machine, every address 127.0.0.1
  (``LOOPBACK_ENV``), shut down at the end;
* ``auto`` — the cluster ``RAY_ADDRESS`` names, or the one ``ray start --head`` runs here;
* ``HOST:PORT`` or ``ray://HOST:PORT`` — that cluster (Saffron installed on its nodes).

A process already connected to Ray (``ray.init`` called before) keeps its connection.

A worker that dies is restarted up to ``retries`` times, and the call it was running is sent
again; past that the run stops with one line, keeping every result already written. Ray is an
optional dependency (``pip install 'saffron[ray]'``); this module imports it only when used.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from saffron.errors import RunStopped, SaffronError
from saffron.runtime import RuntimeConfig

ADDRESS_FORMS = "local, auto, HOST:PORT or ray://HOST:PORT"
_HOST_PORT = re.compile(r"^(ray://)?[A-Za-z0-9_.\-]+:(\d{1,5})$")
IN_FLIGHT = 2  # calls queued per worker: the next one starts as soon as the last returns
# "0" puts Ray in its single-machine mode, where every address it binds or dials is the
# loopback one (without it, a local Ray binds this machine's network address). Ray reads it
# when it is imported.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def parse_address(text: str) -> str:
    """``text`` as a Ray address (see the module doc), or SaffronError naming the forms."""
    address = text.strip()
    if address in ("local", "auto"):
        return address
    match = _HOST_PORT.match(address)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise SaffronError(f"--ray expects {ADDRESS_FORMS}, got {text!r}")
    return address


@dataclass(frozen=True)
class ClusterConfig:
    """Where the Ray workers run and what each one asks for."""

    address: str = "local"
    """``local``, ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` (see :func:`parse_address`)."""
    workers: int = 2
    """Model-holding actors, each with its own copy of the models."""
    cpus: float = 1.0
    """CPUs each worker reserves (its torch threads, unless set otherwise)."""
    gpus: float = 0.0
    """GPUs each worker reserves (1 for a model on ``cuda``)."""
    retries: int = 1
    """Restarts of a worker that died; its call is sent again each time."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", parse_address(self.address))
        if self.workers < 1:
            raise SaffronError(f"--ray-workers must be ≥ 1, got {self.workers}")
        if self.cpus <= 0 or self.gpus < 0 or self.retries < 0:
            raise SaffronError("a Ray worker needs CPUs > 0, GPUs ≥ 0 and retries ≥ 0")


def worker_runtime(runtime: RuntimeConfig, cfg: ClusterConfig) -> RuntimeConfig:
    """The runtime of a worker: ``runtime``, its torch threads defaulting to the CPUs the
    worker reserved (not the node's every core)."""
    if runtime.threads is not None:
        return runtime
    return replace(runtime, threads=max(1, int(cfg.cpus)))


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SaffronError("--ray needs the ray package: pip install 'saffron[ray]'") from None
    return ray


def connect(cfg: ClusterConfig) -> bool:
    """Connect this process to the cluster of ``cfg`` (start one for ``local``); True when this
    call started the connection (the caller shuts it down). SaffronError when it cannot."""
    if cfg.address == "local":
        os.environ[LOOPBACK_ENV] = "0"  # before ray is imported (a no-op if it already was)
    ray = _ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # a worker's errors come back with its calls
        "logging_level": logging.WARNING,
    }
    if cfg.address == "local":
        kwargs.update(address="local", num_cpus=max(1, round(cfg.workers * cfg.cpus)))
    else:
        kwargs["address"] = cfg.address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SaffronError(f"could not connect to Ray at {cfg.address!r}: {first}") from None
    return True


def check_resources(cfg: ClusterConfig) -> None:
    """SaffronError when the cluster lacks the CPUs or GPUs its workers ask for (they would
    wait forever)."""
    have = _ray().cluster_resources()
    for kind, each in (("CPU", cfg.cpus), ("GPU", cfg.gpus)):
        need = each * cfg.workers
        if need and have.get(kind, 0) < need:
            raise SaffronError(
                f"the Ray cluster has {have.get(kind, 0):g} {kind}s; {cfg.workers} workers × "
                f"{each:g} {kind} need {need:g}"
            )


class _Host:
    """The actor: holds ``make()``'s object and runs its methods by name. A user error while
    making it (a device the node lacks, a missing model) is raised by every call, so the driver
    sees that one line rather than a dead actor."""

    def __init__(self, make: Callable[[], object]) -> None:
        self.error: SaffronError | None = None
        try:
            self.obj = make()
        except SaffronError as err:
            self.error = err

    def call(self, method: str, args: tuple[Any, ...]) -> Any:
        if self.error is not None:
            raise self.error
        return getattr(self.obj, method)(*args)

    def pid(self) -> int:
        return os.getpid()


class Workers:
    """``cfg.workers`` Ray actors, each holding ``make()`` (a picklable callable, e.g. a
    ``functools.partial`` of a module-level function). A context manager: entering connects and
    starts the actors, leaving kills them (and shuts Ray down if entering started it).

    Contract: ``make`` and every call's arguments and result are picklable; calls are
    independent of which worker runs them and in what order.
    """

    def __init__(self, cfg: ClusterConfig, make: Callable[[], object]) -> None:
        self.cfg, self.make = cfg, make
        self.actors: list[Any] = []
        self._owned = False

    def __enter__(self) -> Workers:
        self._owned = connect(self.cfg)
        try:
            check_resources(self.cfg)
            host = (
                _ray()
                .remote(_Host)
                .options(
                    num_cpus=self.cfg.cpus,
                    num_gpus=self.cfg.gpus,
                    max_restarts=self.cfg.retries,
                    max_task_retries=self.cfg.retries,
                )
            )
            self.actors = [host.remote(self.make) for _ in range(self.cfg.workers)]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._owned:
            ray.shutdown()

    def pids(self) -> list[int]:
        """The process id of each worker (tests kill one)."""
        ray = _ray()
        return [int(ray.get(a.pid.remote())) for a in self.actors]

    def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` on the first worker; its result."""
        return next(self.map(method, [args]))[1]

    def map(self, method: str, calls: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        """``method(*calls[i])`` on the workers, ``IN_FLIGHT`` queued per worker, the next call
        going to the worker that just finished one; yields ``(i, result)`` in the order they
        finish. A call that raised re-raises its error here; a worker lost past its retries
        raises :class:`~saffron.errors.RunStopped`."""
        ray = _ray()
        todo = deque(enumerate(calls))
        pending: dict[Any, tuple[int, Any]] = {}

        def send(actor: Any) -> None:
            i, args = todo.popleft()
            pending[actor.call.remote(method, args)] = (i, actor)

        for _ in range(IN_FLIGHT):
            for actor in self.actors:
                if todo:
                    send(actor)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i, actor = pending.pop(ref)
            if todo:
                send(actor)  # before reading the result: the worker never idles
            yield i, _result(ray, ref)


def _result(ray: Any, ref: Any) -> Any:
    """``ray.get(ref)``, with the error of the call itself re-raised as it was, and a lost
    worker as one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
    except ray.exceptions.RayActorError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunStopped(f"a Ray worker was lost ({first})") from None
