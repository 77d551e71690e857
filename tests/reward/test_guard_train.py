"""Guard training on the tiny model: it learns a separable toy rule and loads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from saffron.errors import SaffronError
from saffron.lm.models import load_model
from saffron.reward.loading import ARTIFACTS, load_guard
from saffron.train.corpus import REDIRECT, CorpusItem
from saffron.train.guard_train import (
    GuardExample,
    GuardTrainConfig,
    class_weights,
    guard_examples,
    source_weights,
    train_guard,
)
from saffron.types import TokenSequence


def test_tiny_guard_learns_and_loads(tmp_path: Path) -> None:
    base = load_model("tiny-random-llama")
    enc = lambda t: tuple(base.tokenizer.encode(t, add_special_tokens=False))  # noqa: E731
    examples = [
        GuardExample(enc(f"question {i}"), enc("zz" * (2 + i % 3)), True, "toy") for i in range(12)
    ] + [
        GuardExample(enc(f"question {i}"), enc("aa" * (2 + i % 3)), False, "toy") for i in range(12)
    ]
    cfg = GuardTrainConfig(
        epochs=6,
        batch_size=4,
        lr=5e-3,
        rank=4,
        alpha=8,
        first_layer=0,
        safe_word="s",
        unsafe_word="u",
    )
    out = tmp_path / "guard"
    meta = train_guard(base, examples, out, cfg)
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "meta.json").read_text())["examples"] == 24
    assert meta["examples_by_source"] == {"toy": {"safe": 12, "unsafe": 12}}
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == "tiny-random-llama"
    assert not (out / "README.md").exists()

    guard = load_guard(str(out))
    seqs = [TokenSequence((), enc("question 99"), (), (), enc(r)) for r in ("aaaaaa", "zzzzzz")]
    safe, unsafe = guard.score(seqs).tolist()
    assert safe > 0 > unsafe
    prefixes = guard.score_prefixes(seqs[1:])[0]
    assert torch.isfinite(prefixes).all() and prefixes[-1] == torch.tensor(unsafe)


def test_class_weights_balance_each_source() -> None:
    def ex(unsafe: bool, source: str) -> GuardExample:
        return GuardExample((1,), (2,), unsafe, source)

    # source "p": 9 unsafe, 1 safe → safe weighs sqrt(9) = 3; source "r": one label only
    examples = [ex(True, "p")] * 9 + [ex(False, "p")] + [ex(False, "r")] * 4 + [ex(True, "h")] * 2
    raw = [1.0] * 9 + [3.0] + [1.0] * 4 + [1.0] * 2
    mean = sum(raw) / len(raw)
    got = class_weights(examples)
    assert got == pytest.approx([w / mean for w in raw])
    assert sum(got) / len(got) == pytest.approx(1.0)
    # power 1: the lone safe answer weighs as much as the nine unsafe ones together
    raw1 = [1.0] * 9 + [9.0] + [1.0] * 6
    assert class_weights(examples, 1.0) == pytest.approx([w / (sum(raw1) / 16) for w in raw1])
    assert class_weights(examples, 0.0) == [1.0] * 16
    # balanced sources are untouched
    even = [ex(True, "p"), ex(False, "p")] * 3
    assert class_weights(even) == [1.0] * 6
    assert class_weights([]) == []


def _strings(obj: object) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def test_committed_artifacts_hold_no_machine_paths() -> None:
    files = sorted(ARTIFACTS.glob("*/*.json"))
    assert files, "the embedded artifacts are committed"
    for f in files:
        for text in _strings(json.loads(f.read_text())):
            assert not Path(text).is_absolute(), f"{f.name}: {text}"
            assert str(Path.home()) not in text, f"{f.name}: {text}"


@pytest.mark.parametrize("bad", [-0.5, 1.5])
def test_balance_outside_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(SaffronError, match=rf"balance must be in \[0, 1\], got {bad}"):
        GuardTrainConfig(balance=bad)


def test_source_weights_scale_the_human_rows() -> None:
    ex = [GuardExample((1,), (2,), True, "policy")] * 3 + [GuardExample((1,), (2,), False, "human")]
    # human rows at a quarter of the corpus's weight, then rescaled to mean 1
    assert source_weights(ex, 0.0, 0.25) == pytest.approx([1 / 0.8125] * 3 + [0.25 / 0.8125])
    assert source_weights(ex, 0.0, 1.0) == [1.0] * 4
    assert source_weights([], 0.5, 0.0) == []
    with pytest.raises(SaffronError, match="human weight must be ≥ 0, got -1"):
        GuardTrainConfig(human_weight=-1)


def test_guard_examples_label_by_rule_and_keep_only_confirmed_redirections() -> None:
    def item(kind: str, response: str, harmful: bool = True) -> CorpusItem:
        return CorpusItem(kind, "make a weapon", harmful, kind, "", [], [7, 8], response)

    corpus = [
        item("policy", "Step 1: buy the parts."),
        item("policy", "I'm sorry, I can't help with that."),
        item("benign", "Paris is the capital.", harmful=False),
        item(REDIRECT, "Instead, here is why it is illegal and how to stay safe."),
        item(REDIRECT, "Step 1: buy the parts."),  # the instruction ignored: left out
    ]
    got = guard_examples(corpus, lambda t: [len(t)], human=False)
    assert [(e.source, e.unsafe) for e in got] == [
        ("policy", True),
        ("policy", False),
        ("benign", False),
        (REDIRECT, False),
    ]
    assert all(e.prompt == (len("make a weapon"),) and e.response == (7, 8) for e in got)
