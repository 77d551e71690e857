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
        ([], False, 0.0, "smollm2-135m-instruct-seed0.jsonl"),
        (["--own-start", "--balance"], True, 0.5, "smollm2-135m-instruct-seed0-ownstart.jsonl"),
        (
            ["--per-set", "5", "--own-start", "--balance", "1"],
            True,
            1.0,
            "smollm2-135m-instruct-seed0-per5-ownstart.jsonl",
        ),
        (
            ["--own-start", "--redirect", "--first-layer", "0", "--rank", "8", "--lr", "1e-3"],
            True,
            0.0,
            "smollm2-135m-instruct-seed0-ownstart-redirect.jsonl",
        ),
    ],
)
def test_train_guard_flags(
    flags: list[str],
    own_start: bool,
    balance: float,
    corpus_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: dict[str, Any] = {}
    tiny = models.load_model("tiny-random-llama")
    monkeypatch.setenv("SAFFRON_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "load_model", lambda name, *a, **kw: tiny)

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
    assert seen["own_start"] is own_start and seen["cfg"].balance == balance
    assert seen["path"] == tmp_path / "corpus" / corpus_name
    assert seen["out"] == tmp_path / "g"
    assert seen["redirect"] is ("--redirect" in flags)
    cfg = seen["cfg"]
    if "--rank" in flags:
        assert (cfg.first_layer, cfg.rank, cfg.alpha, cfg.lr) == (0, 8, 16, 1e-3)
    else:
        assert (cfg.first_layer, cfg.rank, cfg.alpha, cfg.lr) == (14, 16, 32, 3e-4)
    capsys.readouterr()


@pytest.mark.parametrize("bad", ["2", "-1", "half"])
def test_train_guard_balance_must_be_a_unit_number(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train-guard", "--balance", bad])
    assert exc.value.code == 2
    assert f"expected a number in [0, 1], got {bad!r}" in capsys.readouterr().err
