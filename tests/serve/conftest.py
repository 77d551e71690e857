"""Fixtures for server tests: one tiny world per session, its policy slowed on demand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serve_toys import SlowPolicy, tiny_world

from saffron.search import World


@pytest.fixture(scope="session")
def world() -> World:
    return tiny_world(delay=0.0)


@pytest.fixture
def slow(world: World) -> Iterator[SlowPolicy]:
    """The world's policy, made to sleep 20 ms per step for one test."""
    policy = world.policy
    assert isinstance(policy, SlowPolicy)
    policy.delay, policy.steps = 0.02, 0
    yield policy
    policy.delay = 0.0
