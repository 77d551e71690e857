"""`saffron train-mrm`: partial supervision (Eq. 5), Proposition 1, artifacts, bad inputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from train_toys import EOS, tiny_backbone

from saffron.cli import main
from saffron.errors import SaffronError
from saffron.lm.vocab import vocab_hash
from saffron.reward.mrm import Layout
from saffron.reward.mrm_load import load_trained
from saffron.train.label import LabelConfig, LabelledItem, label_corpus, read_labels
from saffron.train.mrm_train import (
    MRMTrainConfig,
    MRMTrainer,
    check_labels,
    is_heldout,
    make_batch,
    split,
    train_mrm,
    unseen_mask,
)


def item(i: int, prompt: tuple[int, ...], response: tuple[int, ...]) -> LabelledItem:
    rewards = np.linspace(-3, 3, len(response), dtype=np.float32)
    return LabelledItem(f"g{i}/policy", "policy", True, prompt, response, rewards)


def layout(guard) -> Layout:
    return Layout(guard.prefix, guard.infix)


def labelled(guard, corpus, tmp_path: Path, copies: int = 1) -> tuple[dict, list[LabelledItem]]:
    out = tmp_path / "labels"
    tok = guard.backend.loaded.tokenizer
    label_corpus(
        guard,
        tok,
        corpus(copies=copies),
        out,
        LabelConfig(shard_size=8, batch_size=4),
        guard_name="tiny-guard",
        policy_name="tiny-random-llama",
    )
    return read_labels(out)


def test_batch_supervises_the_observed_next_token_at_the_position_before_it() -> None:
    lay = Layout(prefix=(1, 5), infix=(7,))
    a, b = item(0, (10, 11, 12), (20, 21, EOS)), item(1, (10,), (30,))
    batch = make_batch([a, b], lay, pad=0)
    assert batch.ids[0].tolist() == [1, 5, 10, 11, 12, 7, 20, 21, EOS]
    assert batch.ids[1].tolist() == [1, 5, 10, 7, 30, 0, 0, 0, 0]
    assert batch.attention[1].tolist() == [1] * 5 + [0] * 4
    # j = 0 is predicted from the infix's last position; j from the position of token j−1
    assert batch.row.tolist() == [0, 0, 0, 1]
    assert batch.pos.tolist() == [5, 6, 7, 3]
    assert batch.token.tolist() == [20, 21, EOS, 30]
    assert torch.allclose(batch.target, torch.tensor([-3.0, 0.0, 3.0, -3.0]))


def test_proposition_1_unseen_bias_gets_zero_gradient_and_stays(guard) -> None:
    """Paper, Proposition 1: bias entries of never-supervised tokens get exactly zero gradient,
    so training leaves them where they started."""
    items = [item(i, (40 + i, 41), (50 + i, 60, 61, EOS)) for i in range(6)]
    trainer = MRMTrainer(tiny_backbone(), layout(guard), MRMTrainConfig(lr=1e-2, batch_size=3))
    unseen = unseen_mask(items, trainer.vocab)
    assert not unseen[EOS] and int((~unseen).sum()) == 6 + 3
    before = trainer.head.bias.detach().clone()
    for step in range(4):
        batch = make_batch(items[3 * (step % 2) : 3 * (step % 2) + 3], trainer.layout, 0)
        trainer.backward(batch)
        grad = trainer.head.bias.grad
        assert grad is not None
        assert torch.all(grad[unseen] == 0)  # exactly zero, not merely small
        trainer.opt.step()
        trainer.opt.zero_grad()
    after = trainer.head.bias.detach()
    assert torch.equal(after[unseen], before[unseen])
    assert torch.all(after[~unseen] != before[~unseen])  # the supervised ones did move


def test_unseen_mask_is_built_from_training_responses_only() -> None:
    items = [item(0, (99,), (50, EOS)), item(1, (98,), (51,))]
    mask = unseen_mask(items, 300)
    assert mask.dtype == torch.bool and mask.shape == (300,)
    assert sorted(torch.nonzero(~mask).squeeze(-1).tolist()) == [EOS, 50, 51]
    assert mask[99] and mask[98]  # prompt tokens are never supervised as next tokens


def test_split_is_deterministic_and_keeps_prompt_groups_together() -> None:
    # every response to one prompt on one side, whatever the ids (corpus, aligned, visited)
    prompts = [(7, i, i // 7) for i in range(400)]
    kinds = ("advbench-{i}/policy", "smol-aligned/advbench-{i}/k5", "advbench-{i}:visited:3")
    items = [
        LabelledItem(k.format(i=i), "policy", True, p, (1,), np.zeros(1, dtype=np.float32))
        for i, p in enumerate(prompts)
        for k in kinds
    ]
    held = [it for it in items if is_heldout(it, 0.1)]
    assert 0.05 < len(held) / len(items) < 0.15
    assert held == [it for it in items if is_heldout(it, 0.1)]
    for it in held:
        assert sum(other.prompt == it.prompt for other in held) == len(kinds)
    items = [item(i, (1,), (2,)) for i in range(50)] + [item(99, (1,), ())]
    train, hold = split(items, 0.3)
    assert len(train) + len(hold) == 50  # the empty response is dropped
    assert not {it.id for it in train} & {it.id for it in hold}


def test_end_to_end_label_train_load(guard, corpus, tmp_path: Path) -> None:
    """Label a tiny corpus, train a few steps (loss falls), write the artifacts, load them back:
    the loaded MRM's `rewards` equal the training-time forward."""
    _, items = labelled(guard, corpus, tmp_path, copies=4)
    cfg = MRMTrainConfig(lr=3e-3, batch_size=4, epochs=20, holdout=0.0, max_steps=40, rank=8)
    trainer = MRMTrainer(tiny_backbone(), layout(guard), cfg)
    train, _ = split(items, cfg.holdout)
    losses = trainer.fit(train)
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    out = tmp_path / "mrm"
    unseen = unseen_mask(train, trainer.vocab)
    trainer.save(out, unseen, {"format": "saffron-mrm/1", "layout": trainer.layout.to_dict()})
    expected = trainer.predictions(train[:5])

    mrm = load_trained(out, tiny_backbone(), name="tiny-mrm")
    assert torch.equal(mrm.unseen, unseen)
    assert torch.equal(mrm.head.bias.detach(), trainer.head.bias.detach())
    for it, want in zip(train[:5], expected, strict=True):
        s = it.sequence()
        prefixes = [s.with_generated(s.generated[:j]) for j in range(len(s.generated))]
        full = mrm.rewards(prefixes, conservative=False)  # (L, V)
        got = full[torch.arange(len(prefixes)), torch.tensor(s.generated)]
        assert torch.allclose(got, want, atol=1e-4)
        assert torch.allclose(mrm.next_token_rewards([s])[0], want, atol=1e-4)
        masked = mrm.rewards(prefixes[:1])
        assert torch.all(torch.isneginf(masked[0, unseen])) and not masked[0, EOS].isinf()


def test_train_mrm_writes_artifacts_and_meta(guard, corpus, tmp_path: Path) -> None:
    _, items = labelled(guard, corpus, tmp_path, copies=3)
    out = tmp_path / "mrm"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    cfg = MRMTrainConfig(max_steps=2, holdout=0.3)
    info = {"base_guard": "tiny-guard", "policy": "tiny-random-llama", "policy_vocab_hash": "h"}
    meta = train_mrm(tiny_backbone(), layout(guard), items, out, cfg, info)
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "head_bias.safetensors",
        "meta.json",
        "unseen_mask.safetensors",
    ]
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta
    assert meta["steps"] == 2 and meta["config"]["targets"] == ["q_proj", "v_proj"]
    assert meta["train_items"] + meta["heldout_items"] == len(items)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mrm")]  # no leftovers
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]


def test_labels_for_another_tokenizer_are_refused(guard, corpus, tmp_path, capsys) -> None:
    meta, _ = labelled(guard, corpus, tmp_path)
    ours = vocab_hash(guard.backend.loaded.tokenizer)
    with pytest.raises(SaffronError) as err:
        check_labels(replace_hash(meta, "f" * 64), ours, 259, "tiny-random-llama")
    assert str(err.value) == (
        "the labels were built for the tokenizer of 'tiny-random-llama' (hash ffffffffffff…), "
        f"not for 'tiny-random-llama' (hash {ours[:12]}…); label again with this policy"
    )
    # through the command line: nothing loaded, the existing output is left as it was
    labels = tmp_path / "labels"
    on_disk = json.loads((labels / "meta.json").read_text())
    (labels / "meta.json").write_text(json.dumps(replace_hash(on_disk, "f" * 64)))
    out = tmp_path / "mrm"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    argv = ["train-mrm", "--labels", str(labels), "--out", str(out)]
    assert main(argv) == 2
    assert "label again with this policy" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def replace_hash(meta: dict, value: str) -> dict:
    return {**meta, "policy_vocab_hash": value}


def test_bad_train_config() -> None:
    with pytest.raises(SaffronError, match="holdout must be in"):
        MRMTrainConfig(holdout=1.0)
    with pytest.raises(SaffronError, match="learning rates and rank must be positive"):
        replace(MRMTrainConfig(), lr=0.0)
