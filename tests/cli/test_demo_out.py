"""``saffron demo``'s default folder: one per config and weights, so a retrained adapter never
meets the old run's config (which ``claim_dir`` would refuse)."""

from __future__ import annotations

from pathlib import Path

import pytest

from saffron.cli import eval as eval_cli
from saffron.eval import run as run_mod


def test_demo_out_is_stable_and_follows_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    weights = {"policy": "aaaa", "guard": "bbbb", "mrm": "cccc"}
    monkeypatch.setattr(run_mod, "weights_of", lambda cfg: dict(weights))
    first = eval_cli.demo_out()
    assert first.parent == Path("out/demo")
    assert eval_cli.demo_out() == first
    weights["policy"] = "dddd"  # a retrained policy adapter
    assert eval_cli.demo_out() != first


def test_demo_out_on_the_shipped_models_names_a_fresh_folder() -> None:
    out = eval_cli.demo_out()
    assert out.parent == Path("out/demo") and len(out.name) == 10
