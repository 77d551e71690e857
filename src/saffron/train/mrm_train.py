"""``saffron train-mrm``: the MRM trained by partial supervision (paper Eq. 5).

Data: a token-level reward dataset (:mod:`saffron.train.label`). For a response s (policy
tokens) with guard rewards r_j = R(s[0 : j+1]), the loss is the squared error on the observed
next token only::

    L = mean_j ( M(s[0:j])[s_j] − r_j )²        for every j = 0 … len(s) − 1

where ``M(s[0:j])`` is the reward vector read at the position just before token j — for j = 0
the last position of the template infix. One causal forward per sequence gives every prefix's
hidden state at once; only the entry of the observed token is needed, so the head is applied as
``W[s_j]·h + b[s_j]`` (:meth:`RewardHead.gather`) instead of over the whole vocabulary.

Optimisation: mini-batches of ``batch_size`` whole sequences (paper: 4), shuffled every epoch
and grouped by length inside windows of 16 batches (less padding); the loss is the mean over
every supervised token of the batch. AdamW, no weight decay — decay would move even
never-supervised bias entries, which Proposition 1 says must stay put. Trainable: LoRA (r 4 on
q_proj, v_proj of every layer by default; lr 1e-4 as in the paper) and the head bias, which the
forward pass really uses (the released code's forward never called its biased head). The head
weight stays frozen.

The bias starts at zero and has its own learning rate (``bias_lr``, default 1e-2): an entry
gets a gradient only in steps where its token is a target, and Adam moves a parameter by about
lr per step, so at 1e-4 a bias entry could not travel the reward scale (±10) within one epoch.
The paper's bias learning rate is unknown — its released bias is still at initialisation.

Split: items whose prompt group (the id before ``/``: all responses to one prompt) hashes below
``holdout`` are held out — never trained on, and scored by ``bench/mrm_fit.py``.
Unseen mask (Eq. 7): tokens that never occur as a response token of a training item. EOS is
supervised, since corpus responses that finished end with it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import save_file
from torch import Tensor, nn

from saffron.errors import SaffronError
from saffron.files import unit_hash
from saffron.lm.batching import batches
from saffron.lm.models import LoadedModel
from saffron.reward.mrm import BIAS_FILE, MRM_FORMAT, UNSEEN_FILE, Layout, RewardHead
from saffron.train.label import LabelledItem
from saffron.train.loop import (
    LoopConfig,
    LoraSpec,
    adamw,
    add_lora,
    mean,
    run_loop,
    save_trained,
)


@dataclass(frozen=True)
class MRMTrainConfig:
    """Settings of ``saffron train-mrm`` (defaults: the paper's recipe; the embedded smol-mrm
    records its own in its meta.json)."""

    seed: int = 0
    """Seeds the LoRA initialisation and the example order."""
    epochs: int = 1
    """Passes over the training items."""
    batch_size: int = 4
    """Sequences per optimiser step."""
    lr: float = 1e-4
    """LoRA learning rate (the paper's)."""
    bias_lr: float = 1e-2
    """Learning rate of the reward head's bias (see the module doc)."""
    rank: int = 4
    """LoRA rank (the paper's)."""
    alpha: int = 4
    """LoRA alpha (the paper's)."""
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    """Modules with a LoRA adapter (the paper's)."""
    first_layer: int = 0
    """LoRA on layers first_layer … last (0: all, as the paper)."""
    holdout: float = 0.1
    """Fraction of prompt groups held out to measure the fit, in [0, 1)."""
    max_steps: int | None = None
    """Stop after this many steps (smoke runs); None runs every epoch."""

    def __post_init__(self) -> None:
        if (
            self.epochs < 1
            or self.batch_size < 1
            or self.rank < 1
            or min(self.lr, self.bias_lr) <= 0
        ):
            raise SaffronError("epochs, batch size, learning rates and rank must be positive")
        if self.first_layer < 0:
            raise SaffronError(f"first_layer must be ≥ 0, got {self.first_layer}")
        if not 0.0 <= self.holdout < 1.0:
            raise SaffronError(f"holdout must be in [0, 1), got {self.holdout}")
        if not self.targets:
            raise SaffronError("LoRA needs at least one target module")
        if self.max_steps is not None and self.max_steps < 1:
            raise SaffronError(f"max_steps must be positive, got {self.max_steps}")


def is_heldout(item: LabelledItem, fraction: float) -> bool:
    """Whether an item is held out: a stable hash of its prompt's token ids, so that every
    response to one prompt (sampled, prefilled, search-visited, under any policy) is on the
    same side whatever its id looks like."""
    key = ",".join(str(t) for t in item.prompt)
    return unit_hash(key.encode()) < fraction


def split(items: list[LabelledItem], fraction: float) -> tuple[list[LabelledItem], ...]:
    """(train, held-out); items with an empty response are dropped (nothing to supervise)."""
    live = [it for it in items if it.response]
    return (
        [it for it in live if not is_heldout(it, fraction)],
        [it for it in live if is_heldout(it, fraction)],
    )


def unseen_mask(items: list[LabelledItem], vocab: int) -> Tensor:
    """(vocab,) bool: True for tokens never supervised as a next token in ``items``."""
    seen = torch.zeros(vocab, dtype=torch.bool)
    for it in items:
        seen[list(it.response)] = True
    return ~seen


@dataclass(frozen=True)
class Batch:
    """A padded mini-batch and the flat index of every supervised (position, token, reward)."""

    ids: Tensor  # (B, T) long, right-padded
    attention: Tensor  # (B, T) long
    row: Tensor  # (N,) which sequence
    pos: Tensor  # (N,) position whose reward vector predicts the token
    token: Tensor  # (N,) the observed next token s_j
    target: Tensor  # (N,) float32 r_j


def make_batch(items: list[LabelledItem], layout: Layout, pad: int) -> Batch:
    seqs = [layout.tokens(it.sequence()) for it in items]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    attention = torch.zeros(len(seqs), width, dtype=torch.long)
    row: list[int] = []
    pos: list[int] = []
    token: list[int] = []
    target: list[float] = []
    for b, (s, it) in enumerate(zip(seqs, items, strict=True)):
        ids[b, : len(s)] = torch.tensor(s)
        attention[b, : len(s)] = 1
        start = layout.response_start(it.sequence())
        n = len(it.response)
        row += [b] * n
        pos += range(start - 1, start - 1 + n)  # the position before token j predicts it
        token += it.response
        target += [float(x) for x in it.rewards]
    return Batch(
        ids,
        attention,
        torch.tensor(row),
        torch.tensor(pos),
        torch.tensor(token),
        torch.tensor(target, dtype=torch.float32),
    )


class MRMTrainer:
    """LoRA + reward head on a guard backbone (mutated: LoRA layers are injected into it)."""

    def __init__(self, backbone: LoadedModel, layout: Layout, cfg: MRMTrainConfig) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg, self.layout, self.backbone = cfg, layout, backbone
        spec = LoraSpec(cfg.rank, cfg.alpha, cfg.targets, cfg.first_layer)
        self.peft: PeftModel = add_lora(backbone.model, spec)
        self.decoder: nn.Module = backbone.model.base_model  # the decoder, with LoRA layers
        head = backbone.model.get_output_embeddings()
        vocab = int(head.weight.shape[0])
        # A new bias, zero-initialised: unsupervised entries stay exactly 0 (Proposition 1).
        self.head = RewardHead(head.weight, torch.zeros(vocab))
        lora_params = [p for p in self.peft.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [
            {"params": lora_params},
            {"params": [self.head.bias], "lr": cfg.bias_lr},
        ]
        self.opt = adamw(groups, cfg.lr)
        self.pad = int(backbone.tokenizer.pad_token_id or 0)
        self.device = next(backbone.model.parameters()).device

    @property
    def vocab(self) -> int:
        return self.head.out_features

    def predict(self, batch: Batch) -> Tensor:
        """M(s[0:j])[s_j] for every supervised (row, j) of ``batch``: (N,)."""
        dev = self.device
        hidden = self.decoder(
            input_ids=batch.ids.to(dev), attention_mask=batch.attention.to(dev)
        ).last_hidden_state  # (B, T, d)
        h = hidden[batch.row.to(dev), batch.pos.to(dev)]  # (N, d)
        return self.head.gather(h, batch.token.to(dev))

    def loss(self, batch: Batch) -> Tensor:
        """The partial-supervision loss (Eq. 5) of ``batch``, in training mode."""
        self.peft.train()
        return torch.mean((self.predict(batch) - batch.target.to(self.device)) ** 2)

    def backward(self, batch: Batch) -> float:
        """Accumulate gradients of the partial-supervision loss (Eq. 5); returns the loss."""
        loss = self.loss(batch)
        loss.backward()
        return float(loss.detach())

    def predictions(self, items: list[LabelledItem], batch_size: int = 8) -> list[Tensor]:
        """Training-time forward (no grad) for each item: (len(response),) float32."""
        self.peft.eval()
        out: list[Tensor] = []
        with torch.no_grad():
            for part in batches(items, batch_size):
                flat = self.predict(make_batch(part, self.layout, self.pad)).cpu()
                out.extend(torch.split(flat, [len(it.response) for it in part]))
        return out

    def fit(self, items: list[LabelledItem]) -> list[float]:
        """Train on ``items`` for ``cfg.epochs`` (or ``cfg.max_steps``); per-step losses.

        Constant learning rates, no clipping (the paper's recipe)."""
        cfg = self.cfg
        loop = LoopConfig(
            seed=cfg.seed,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            max_steps=cfg.max_steps,
            desc="train-mrm",
        )
        lengths = [len(it.prompt) + len(it.response) for it in items]

        def loss(idx: list[int]) -> Tensor:
            return self.loss(make_batch([items[i] for i in idx], self.layout, self.pad))

        return run_loop(self.opt, lengths, loss, loop)

    def save(self, out_dir: Path, unseen: Tensor, meta: dict[str, object]) -> None:
        """Write adapter, bias, unseen mask and meta.json; swap into ``out_dir`` at the end."""

        def tensors(tmp: Path) -> None:
            save_file({"bias": self.head.bias.detach().float().cpu()}, str(tmp / BIAS_FILE))
            save_file({"unseen": unseen.to(torch.bool).cpu()}, str(tmp / UNSEEN_FILE))

        save_trained(out_dir, self.peft, str(meta.get("base_guard", "")), meta, tensors)


def check_labels(label_meta: dict[str, object], vocab_hash: str, vocab: int, policy: str) -> None:
    """Refuse labels built for another tokenizer than the policy's, or a backbone whose head
    does not cover the policy's vocabulary."""
    theirs = str(label_meta.get("policy_vocab_hash"))
    if theirs != vocab_hash:
        raise SaffronError(
            f"the labels were built for the tokenizer of {label_meta.get('policy')!r} (hash "
            f"{theirs[:12]}…), not for {policy!r} (hash {vocab_hash[:12]}…); label again with "
            "this policy"
        )
    if int(str(label_meta.get("vocab_size"))) > vocab:
        raise SaffronError(
            f"the labels use a vocabulary of {label_meta.get('vocab_size')} tokens but the "
            f"backbone's head has {vocab}"
        )


def train_mrm(
    backbone: LoadedModel,
    layout: Layout,
    items: list[LabelledItem],
    out_dir: Path,
    cfg: MRMTrainConfig,
    info: dict[str, object],
) -> dict[str, object]:
    """Train on the train split of ``items`` and write the MRM folder; return its meta.

    ``info`` is merged into ``meta.json`` (base guard, policy, vocab hash, labels path …).
    """
    train, held = split(items, cfg.holdout)
    if not train:
        raise SaffronError("no training items (every response is empty or held out)")
    t0 = time.perf_counter()
    trainer = MRMTrainer(backbone, layout, cfg)
    losses = trainer.fit(train)
    unseen = unseen_mask(train, trainer.vocab)
    meta: dict[str, object] = {
        "format": MRM_FORMAT,
        **info,
        "layout": layout.to_dict(),
        "vocab_size": trainer.vocab,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "split": {
            "rule": "sha256(prompt token ids, comma-joined)[:8] / 16**8 < holdout",
            "holdout": cfg.holdout,
        },
        "train_items": len(train),
        "train_tokens": sum(len(it.response) for it in train),
        "heldout_items": len(held),
        "unseen_tokens": int(unseen.sum()),
        "steps": len(losses),
        "first_loss_mean50": mean(losses[:50]),
        "final_loss_mean50": mean(losses[-50:]),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    trainer.save(out_dir, unseen, meta)
    return meta
