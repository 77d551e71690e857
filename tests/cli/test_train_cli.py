"""`saffron train-guard` options reach the corpus builder and the training config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from saffron.cli import main
from saffron.lm import models
from saffron.train import corpus, guard_train


@pytest.mark.parametrize(
    ("flags", "own_start", "balance", "corpus_name"),
    [
        ([], False, False, "smollm2-135m-instruct-seed0.jsonl"),
        (["--own-start", "--balance"], True, True, "smollm2-135m-instruct-seed0-ownstart.jsonl"),
        (
            ["--per-set", "5", "--own-start"],
            True,
            False,
            "smollm2-135m-instruct-seed0-per5-ownstart.jsonl",
        ),
    ],
)
def test_train_guard_flags(
    flags: list[str],
    own_start: bool,
    balance: bool,
    corpus_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: dict[str, Any] = {}
    tiny = models.load_model("tiny-random-llama")
    monkeypatch.setenv("SAFFRON_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "load_model", lambda name: tiny)

    def fake_corpus(policy: object, path: Path, **kw: Any) -> list[object]:
        seen.update(kw, path=path)
        return []

    def fake_train(base: object, examples: object, out: Path, cfg: Any) -> dict[str, object]:
        seen.update(cfg=cfg, out=out)
        return {}

    monkeypatch.setattr(corpus, "build_corpus", fake_corpus)
    monkeypatch.setattr(guard_train, "guard_examples", lambda *a, **k: [])
    monkeypatch.setattr(guard_train, "train_guard", fake_train)
    assert main(["train-guard", *flags, "--out", str(tmp_path / "g")]) == 0
    assert seen["own_start"] is own_start and seen["cfg"].balance is balance
    assert seen["path"] == tmp_path / "corpus" / corpus_name
    assert seen["out"] == tmp_path / "g"
    capsys.readouterr()
