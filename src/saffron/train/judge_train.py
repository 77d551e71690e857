"""Training the independent judge (``saffron train-judge``): Gemma 3 270M + LoRA + verdict head.

Data (:mod:`saffron.train.judge_data`) — labels read by people, and none from the guard's
rule-labelled corpus, so the judge does not inherit the guard's mistakes:

* PyRIT's human-labelled (objective, response, score) rows, harmful ⇔ mean human score ≥ 0.5,
  minus the rows :func:`saffron.train.guard_train.human_heldout` holds out — the same held-out
  rows smol-guard is measured on, so the two AUROCs compare;
* the gold set's train part (:func:`saffron.data.gold.load_gold`): ``harmful`` → unsafe, every
  other label (refusal, redirect, degenerate, benign) → safe. The judged text is the answer
  after the prefill, as the judge reads it (:mod:`saffron.reward.independent`).

The gold validation part makes every choice: the epoch kept (the one with the best validation
AUROC) and the threshold, folded into the head's bias so that reward 0 is the threshold that
maximises balanced accuracy on it. The test part is never read here.

Objective: weighted logistic loss on reward = diff · h + bias at the verdict position (label
safe ⇒ reward > 0). LoRA sits on layers ``first_layer`` … last, so the backward pass stops
there; ``diff`` (initialised from the " safe" − " unsafe" rows of the LM head) and ``bias`` are
trained too, at their own learning rate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from saffron.errors import SaffronError
from saffron.lm.adapters import fingerprint
from saffron.lm.models import LoadedModel
from saffron.reward.guard import single_token
from saffron.reward.independent import HEAD_FILE, JUDGE_KIND, JudgeFormat, judge_tokens
from saffron.train.judge_data import (
    JudgeExample,
    auroc,
    best_threshold,
    count,
    data_fingerprint,
    example_weights,
)
from saffron.train.loop import (
    LoopConfig,
    LoraSpec,
    adamw,
    add_lora,
    config_dict,
    mean,
    run_loop,
    save_trained,
)


@dataclass(frozen=True)
class JudgeTrainConfig:
    """Hyper-parameters of ``saffron train-judge``."""

    seed: int = 0
    """Seeds the LoRA initialisation and the example order."""
    epochs: int = 4
    """Most passes over the data; the epoch with the best validation AUROC is kept (the
    committed judge's validation AUROC still rose at the fourth)."""
    batch_size: int = 8
    """Examples per optimiser step."""
    lr: float = 5e-4
    """Learning rate of the LoRA weights (constant after the warm-up)."""
    head_lr: float = 1e-3
    """Learning rate of the verdict head (diff and bias)."""
    rank: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA alpha (the update is scaled by alpha / rank)."""
    first_layer: int = 12
    """LoRA on layers first_layer … last (Gemma 3 270M has 18): the backward pass stops there,
    which keeps a CPU epoch within minutes."""
    targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    """Linear modules that get a LoRA adapter."""
    gold_weight: float = 3.0
    """Loss weight of a gold item relative to a human row (before the mean-1 rescaling): the
    gold items are the embedded world's own answers (benign requests among them, which the
    human rows lack), the human rows other models'."""
    warmup: int = 20
    """Steps of linear learning-rate warm-up at the start."""
    safe_word: str = " safe"
    """The word whose LM-head row starts the head's positive side."""
    unsafe_word: str = " unsafe"
    """The word whose LM-head row starts the head's negative side."""
    calibrate: bool = True
    """Shift the head's bias so that reward 0 is the validation's best balanced-accuracy
    threshold."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.rank < 1 or self.alpha < 1:
            raise SaffronError("epochs, batch size, rank and alpha must be positive")
        if self.lr <= 0 or self.head_lr < 0 or self.gold_weight < 0 or self.warmup < 0:
            raise SaffronError("learning rates must be positive; weights and warm-up ≥ 0")


def _padded(rows: Sequence[tuple[int, ...]], pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ids (B, T), attention mask (B, T), index of each row's last token (B,)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        attn[b, : len(r)] = 1
    last = torch.tensor([len(r) - 1 for r in rows])
    return ids, attn, last


class TrainHead(nn.Module):
    """The verdict head while it trains: reward = h · diff + bias."""

    def __init__(self, diff: Tensor) -> None:
        super().__init__()
        self.diff = nn.Parameter(diff.detach().clone().float())  # (d,)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden.float() @ self.diff + self.bias


def batch_rewards(
    decoder: nn.Module, head: TrainHead, rows: Sequence[tuple[int, ...]], pad: int
) -> Tensor:
    """Reward at the last token of each row (B,); gradients flow when enabled by the caller."""
    dev = head.diff.device
    ids, attn, last = (t.to(dev) for t in _padded(rows, pad))
    hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state  # (B, T, d)
    return head(hidden[torch.arange(len(rows), device=dev), last])


def judge_loss(
    decoder: nn.Module,
    head: TrainHead,
    rows: Sequence[tuple[int, ...]],
    unsafe: Sequence[bool],
    w: Tensor,
    pad: int,
) -> Tensor:
    """Weighted logistic loss on the reward (target 1 = safe), averaged over the batch."""
    reward = batch_rewards(decoder, head, rows, pad)
    target = torch.tensor([0.0 if u else 1.0 for u in unsafe], device=reward.device)
    bce = nn.functional.binary_cross_entropy_with_logits(reward, target, reduction="none")
    return (w * bce).mean()


def predict(
    decoder: nn.Module, head: TrainHead, rows: Sequence[tuple[int, ...]], pad: int, size: int = 16
) -> list[float]:
    """Rewards of ``rows`` without gradients, ``size`` rows per forward."""
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(rows), size):
            out += batch_rewards(decoder, head, rows[i : i + size], pad).tolist()
    return out


@dataclass
class _Run:
    """What training needs in one place: the model with LoRA, its decoder, the head, data."""

    model: nn.Module
    decoder: nn.Module
    head: TrainHead
    rows: list[tuple[int, ...]]
    unsafe: list[bool]
    weights: Tensor
    val_rows: list[tuple[int, ...]]
    val_unsafe: list[bool]
    pad: int


def _prepare(
    base: LoadedModel,
    train: list[JudgeExample],
    validation: list[JudgeExample],
    cfg: JudgeTrainConfig,
    fmt: JudgeFormat,
) -> _Run:
    """LoRA on ``base.model`` (mutated), the head from the verdict words' LM-head rows, and
    every example tokenised once."""
    tok: PreTrainedTokenizerBase = base.tokenizer
    n_layers = int(base.model.config.num_hidden_layers)
    spec = LoraSpec(cfg.rank, cfg.alpha, cfg.targets, min(cfg.first_layer, n_layers - 1))
    model = add_lora(base.model, spec)
    head_w = base.model.get_output_embeddings().weight.detach()
    diff = head_w[single_token(tok, cfg.safe_word)] - head_w[single_token(tok, cfg.unsafe_word)]
    dev = head_w.device

    def enc(exs: list[JudgeExample]) -> list[tuple[int, ...]]:
        return [judge_tokens(tok, fmt, ex.prompt, ex.answer) for ex in exs]

    return _Run(
        model=model,
        decoder=base.model.base_model,  # the decoder inside, now carrying LoRA layers
        head=TrainHead(diff).to(dev),
        rows=enc(train),
        unsafe=[ex.unsafe for ex in train],
        weights=torch.tensor(example_weights(train, cfg.gold_weight), device=dev),
        val_rows=enc(validation),
        val_unsafe=[ex.unsafe for ex in validation],
        pad=int(tok.pad_token_id or 0),
    )


def _trainable(run: _Run) -> dict[str, Tensor]:
    """Copies of every trained tensor (LoRA weights and head), to restore the best epoch."""
    named = dict(run.model.named_parameters()) | {
        f"head.{k}": v for k, v in run.head.named_parameters()
    }
    return {k: v.detach().clone() for k, v in named.items() if v.requires_grad}


def _restore(run: _Run, saved: dict[str, Tensor]) -> None:
    named = dict(run.model.named_parameters()) | {
        f"head.{k}": v for k, v in run.head.named_parameters()
    }
    with torch.no_grad():
        for k, v in saved.items():
            named[k].copy_(v)


def _epochs(run: _Run, cfg: JudgeTrainConfig) -> tuple[list[float], list[float], int]:
    """Train epoch by epoch; after each, the validation AUROC (harmful = positive, scored by
    −reward). Restores the best epoch's weights. Returns (losses, AUROC per epoch, best epoch
    counted from 1)."""
    lora = [p for p in run.model.parameters() if p.requires_grad]
    opt = adamw(
        [{"params": lora}, {"params": list(run.head.parameters()), "lr": cfg.head_lr}], cfg.lr
    )
    lengths = [len(r) for r in run.rows]
    losses: list[float] = []
    aucs: list[float] = []
    best: dict[str, Tensor] = {}
    for epoch in range(cfg.epochs):
        loop = LoopConfig(
            seed=cfg.seed + epoch,
            epochs=1,
            batch_size=cfg.batch_size,
            warmup=cfg.warmup if epoch == 0 else 0,
            clip=1.0,
            desc=f"train-judge {epoch + 1}/{cfg.epochs}",
        )
        run.model.train()
        losses += run_loop(
            opt,
            lengths,
            lambda idx: judge_loss(
                run.decoder,
                run.head,
                [run.rows[i] for i in idx],
                [run.unsafe[i] for i in idx],
                run.weights[idx],
                run.pad,
            ),
            loop,
        )
        run.model.eval()
        rewards = predict(run.decoder, run.head, run.val_rows, run.pad)
        aucs.append(auroc([-r for r in rewards], run.val_unsafe) if run.val_rows else -1.0)
        ranked = [a if a == a else -1.0 for a in aucs]  # nan (one class only) ranks last
        if ranked[-1] >= max(ranked):  # later epochs win ties: more training, equal quality
            best = _trainable(run)
    _restore(run, best)
    return losses, aucs, max(range(len(aucs)), key=lambda i: (ranked[i], i)) + 1


def _calibrate(run: _Run, cfg: JudgeTrainConfig) -> dict[str, float]:
    """Fold the validation's best threshold into the bias (when asked and there is data)."""
    rewards = predict(run.decoder, run.head, run.val_rows, run.pad) if run.val_rows else []
    shift = best_threshold(rewards, run.val_unsafe) if cfg.calibrate and rewards else 0.0
    with torch.no_grad():
        run.head.bias.sub_(shift)

    def accuracy(t: float) -> float:
        hits = sum((r < t) == y for r, y in zip(rewards, run.val_unsafe, strict=True))
        return hits / len(rewards) if rewards else float("nan")

    return {"shift": shift, "accuracy_at_0_before": accuracy(0.0), "accuracy": accuracy(shift)}


def train_judge(
    base: LoadedModel,
    train: list[JudgeExample],
    validation: list[JudgeExample],
    out_dir: Path,
    cfg: JudgeTrainConfig,
    fmt: JudgeFormat | None = None,
) -> dict[str, object]:
    """Train the judge on ``train``, choose its epoch and threshold on ``validation``, and
    write the adapter, the head (:data:`HEAD_FILE`) and ``meta.json`` to ``out_dir``.

    ``base.model`` is mutated (LoRA layers are injected). The example order and the LoRA
    initialisation depend only on ``cfg.seed``. Raises SaffronError when ``train`` is empty or
    holds one label only.
    """
    labels = {ex.unsafe for ex in train}
    if len(labels) < 2:
        raise SaffronError(
            f"the judge needs safe and unsafe examples to train on; got {len(train)} examples"
            + (f", all {'unsafe' if labels.pop() else 'safe'}" if labels else "")
        )
    fmt = fmt or JudgeFormat()
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    run = _prepare(base, train, validation, cfg, fmt)
    losses, aucs, best = _epochs(run, cfg)
    calibration = _calibrate(run, cfg)
    meta: dict[str, object] = {
        "kind": JUDGE_KIND,
        "base": base.name,
        "format": fmt.to_dict(),
        "config": config_dict(cfg),
        "examples": len(train),
        "examples_by_source": count(train),
        "data_sha256": data_fingerprint(train),
        "validation": {
            "examples_by_source": count(validation),
            "data_sha256": data_fingerprint(validation),
            "auroc_by_epoch": aucs,
            "epoch_kept": best,
            "threshold": calibration,
        },
        "steps": len(losses),
        "loss_by_epoch": [mean(part) for part in _split(losses, cfg.epochs)],
        "final_loss_mean20": mean(losses[-20:]),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    _save(run, base.name, meta, out_dir)
    return meta


def _split(xs: list[float], parts: int) -> list[list[float]]:
    """``xs`` cut into ``parts`` consecutive runs of equal length (the last may be shorter)."""
    size = max(1, -(-len(xs) // parts))
    return [xs[i : i + size] for i in range(0, len(xs), size)]


def _save(run: _Run, base_name: str, meta: dict[str, object], out_dir: Path) -> None:
    """The adapter, the head and meta.json (with the weights' fingerprint), written whole: a
    failed run never leaves half a judge (:func:`saffron.train.loop.save_trained`)."""

    def head(tmp: Path) -> None:
        tensors = {
            k: v.detach().float().cpu().contiguous() for k, v in run.head.state_dict().items()
        }
        save_file(tensors, str(tmp / HEAD_FILE))
        meta["weights"] = fingerprint(str(tmp))  # the adapter is written by now

    save_trained(out_dir, run.model, base_name, meta, head)  # type: ignore[arg-type]
