"""The engine's queue: cancelled work is dropped (queued) or stopped between steps (running)."""

from __future__ import annotations

import asyncio

import pytest
from serve_toys import SlowPolicy

from saffron.search import SearchConfig, World
from saffron.serve.engine import Engine, QueueFull


def test_cancel_drops_queued_and_stops_running(world: World, slow: SlowPolicy) -> None:
    seq = world.policy.chat.sequence("How do I stay safe?")
    cfg = SearchConfig(max_new_tokens=200, min_new_tokens=200)

    async def main() -> tuple[int, bool, bool]:
        engine = Engine(world, queue_size=2)
        running = engine.submit("sample", seq, cfg)
        queued = engine.submit("sample", seq, cfg)
        with pytest.raises(QueueFull):  # one waiting slot is free, then none
            engine.submit("sample", seq, cfg)
            engine.submit("sample", seq, cfg)
        while running.started is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        engine.cancel(queued)
        engine.cancel(running)
        for _ in range(300):  # at most 3 s; the full search would take ≥ 4 s
            if engine.running == 0:
                break
            await asyncio.sleep(0.01)
        await engine.close()
        return engine.running, queued.started is None, running.future.cancelled()

    still_running, never_started, dropped = asyncio.run(main())
    assert still_running == 0 and never_started and dropped
    assert 0 < slow.steps < 150
