"""Training the independent judge on the tiny Gemma 3: it learns a separable toy set, keeps its
best validation epoch, writes a small artifact that loads back with the same verdicts, refuses
data it cannot learn from, and draws its data from human-read labels only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saffron.cli import main
from saffron.data.gold import load_gold
from saffron.errors import SaffronError
from saffron.eval.judges import Answer, independent_scorer
from saffron.lm.models import TINY_GEMMA3, load_model
from saffron.reward.independent import HEAD_FILE, JUDGE_KIND, JudgeFormat, judge_tokens
from saffron.reward.loading import load_guard
from saffron.train.judge_data import (
    GOLD,
    HUMAN,
    JudgeExample,
    auroc,
    best_threshold,
    example_weights,
    gold_examples,
    human_examples,
)
from saffron.train.judge_train import JudgeTrainConfig, train_judge

FMT = JudgeFormat(
    intro="Q: ", answer_intro="\nA: ", question="\nOK?", max_prompt_tokens=24, max_answer_tokens=24
)
TOY = JudgeTrainConfig(
    epochs=3,
    batch_size=4,
    lr=5e-3,
    head_lr=5e-2,
    rank=4,
    alpha=8,
    first_layer=0,
    warmup=0,
    safe_word="s",
    unsafe_word="u",
)


def _toy(n: int, offset: int = 0) -> list[JudgeExample]:
    """Separable by the answer's letters: 'zz…' unsafe, 'aa…' safe, whatever the request."""
    out = []
    for i in range(offset, offset + n):
        out.append(JudgeExample(f"question {i}", "zz " * (2 + i % 3), True, HUMAN))
        out.append(JudgeExample(f"question {i}", "aa " * (2 + i % 3), False, GOLD))
    return out


def test_tiny_judge_learns_saves_and_loads(tmp_path: Path) -> None:
    base = load_model(TINY_GEMMA3)
    out = tmp_path / "judge"
    meta = train_judge(base, _toy(12), _toy(4, offset=50), out, TOY, FMT)
    assert meta["kind"] == JUDGE_KIND and meta["base"] == TINY_GEMMA3
    assert meta["examples"] == 24
    assert meta["examples_by_source"] == {
        HUMAN: {"safe": 0, "unsafe": 12},
        GOLD: {"safe": 12, "unsafe": 0},
    }
    losses = meta["loss_by_epoch"]
    assert isinstance(losses, list) and len(losses) == 3 and losses[-1] < losses[0] / 5
    val = meta["validation"]
    assert isinstance(val, dict) and len(val["auroc_by_epoch"]) == 3
    assert val["auroc_by_epoch"][val["epoch_kept"] - 1] == max(val["auroc_by_epoch"]) == 1.0
    files = {p.name for p in out.iterdir()}
    assert files == {"adapter_config.json", "adapter_model.safetensors", HEAD_FILE, "meta.json"}
    saved = json.loads((out / "meta.json").read_text())
    assert saved["weights"] and saved["format"] == FMT.to_dict()

    # the trained network in memory (LoRA unmerged) and the loaded judge (merged) agree
    head = load_file(str(out / HEAD_FILE))
    pairs = [("question 99", "zz zz zz"), ("question 98", "aa aa aa")]
    rows = [judge_tokens(base.tokenizer, FMT, p, a) for p, a in pairs]
    with torch.no_grad():
        hidden = torch.stack(
            [base.model.base_model(torch.tensor([r])).last_hidden_state[0, -1] for r in rows]
        )
    want = hidden @ head["diff"] + head["bias"]
    judge = load_guard(str(out))
    got = judge.score_texts(*zip(*pairs, strict=True))  # type: ignore[attr-defined]
    assert torch.allclose(got, want, atol=1e-4)
    unsafe, safe = got.tolist()
    assert unsafe < 0 < safe
    # saffron judge --judge independent: the same verdicts on stored answers; the prefill unread
    answers = [Answer(p, "Sure, here", a) for p, a in pairs]
    assert independent_scorer(str(out))(answers) == pytest.approx(got.tolist(), abs=1e-6)


def test_training_refuses_data_it_cannot_learn_from(tmp_path: Path) -> None:
    base = load_model(TINY_GEMMA3)
    with pytest.raises(SaffronError, match=r"got 0 examples$"):
        train_judge(base, [], [], tmp_path / "j", TOY, FMT)
    only_unsafe = [ex for ex in _toy(3) if ex.unsafe]
    with pytest.raises(SaffronError, match="got 3 examples, all unsafe"):
        train_judge(base, only_unsafe, [], tmp_path / "j", TOY, FMT)
    assert not (tmp_path / "j").exists()
    with pytest.raises(SaffronError, match="must be positive"):
        JudgeTrainConfig(epochs=0)


def test_train_judge_command_rejects_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-judge", "--epochs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("saffron: error:") and "\n" not in err


def test_weights_threshold_and_auroc() -> None:
    exs = [JudgeExample("p", "a", True, GOLD)] + [JudgeExample("p", "a", False, HUMAN)] * 3
    w = example_weights(exs, 3.0)
    assert w == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3]) and sum(w) == pytest.approx(4.0)
    assert auroc([3.0, 2.0, 1.0], [True, False, False]) == 1.0
    assert auroc([1.0, 1.0], [True, False]) == 0.5
    assert auroc([1.0], [True]) != auroc([1.0], [True])  # nan: one class only
    # unsafe ⇔ reward < t: the best cut lies between -1 and 2, 0 is on it and closest to 0
    assert best_threshold([-3.0, -1.0, 2.0, 4.0], [True, True, False, False]) == 0.0
    assert best_threshold([1.0, 2.0, 5.0, 6.0], [True, True, False, False]) == 3.5
    assert best_threshold([1.0, 2.0], [False, False]) == 0.0


def test_data_is_human_read_and_never_the_test_part() -> None:
    from saffron.data import load_scorer_rows
    from saffron.train.guard_train import human_heldout

    human = human_examples()
    rows = [r for r in load_scorer_rows() if r.harmful is not None]
    assert len(human) == sum(not human_heldout(r) for r in rows)
    held = {(r.objective, r.response) for r in rows if human_heldout(r)}
    assert not held & {(ex.prompt, ex.answer) for ex in human}
    gold = gold_examples("train")
    items = load_gold("train")
    assert [ex.unsafe for ex in gold] == [i.label == "harmful" for i in items]
    test_answers = {(i.prompt, i.answer) for i in load_gold("test")}
    assert not test_answers & {(ex.prompt, ex.answer) for ex in gold + gold_examples("validation")}
