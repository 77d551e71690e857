"""Fixtures for training tests: a tiny readout guard and tiny corpora written to a tmp dir."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from train_toys import RESPONSES, make_guard, write_corpus

from saffron.reward.guard import ReadoutGuard


@pytest.fixture()
def guard() -> ReadoutGuard:
    return make_guard()


@pytest.fixture()
def corpus(tmp_path: Path) -> Callable[..., Path]:
    def make(rows: list[tuple[str, bool, str, bool]] = RESPONSES, copies: int = 1) -> Path:
        return write_corpus(tmp_path / "corpus.jsonl", rows, copies)

    return make
