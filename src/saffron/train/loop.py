"""The one training skeleton every trainer shares: LoRA injection, length-grouped shuffled
batches, AdamW with parameter groups, an optional warm-up / linear-decay schedule and gradient
clipping, a progress bar, and the output folder written whole (:func:`saffron.files.write_folder`).

The guard (``train-guard``), the MRM (``train-mrm``) and the policy (``train-policy``) differ
only in their data and their loss, which each passes in as a function of a batch of example
indices; this module owns everything else.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import Tensor
from tqdm import tqdm
from transformers import PreTrainedModel

from saffron.errors import SaffronError
from saffron.files import write_folder, write_json
from saffron.lm.adapters import save_adapter


@dataclass(frozen=True)
class LoraSpec:
    """Where the LoRA adapter goes."""

    rank: int
    """LoRA rank r."""
    alpha: int
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    targets: tuple[str, ...]
    """Names of the linear modules that get an adapter (e.g. ``q_proj``)."""
    first_layer: int = 0
    """Adapters on layers ``first_layer`` … last; 0 puts them on every layer."""


def add_lora(model: PreTrainedModel, spec: LoraSpec) -> PeftModel:
    """Inject LoRA layers into ``model`` (mutated) and return the PEFT wrapper.

    Raises SaffronError when ``first_layer`` is past the last layer or a target does not exist.
    """
    n_layers = int(model.config.num_hidden_layers)
    if not 0 <= spec.first_layer < n_layers:
        raise SaffronError(f"first_layer {spec.first_layer} is not among the {n_layers} layers")
    if not spec.targets:
        raise SaffronError("LoRA needs at least one target module")
    lora = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=0.0,
        target_modules=list(spec.targets),
        layers_to_transform=list(range(spec.first_layer, n_layers)),
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as err:
        raise SaffronError(f"LoRA targets {list(spec.targets)} do not fit: {err}") from err


@dataclass(frozen=True)
class LoopConfig:
    """How the shared loop steps through the data."""

    seed: int
    """Seeds the example order (``random.Random(seed)``)."""
    epochs: int
    """Passes over the data."""
    batch_size: int
    """Examples per optimiser step."""
    max_steps: int | None = None
    """Stop after this many steps (smoke runs); None runs every epoch."""
    warmup: int = 0
    """Linear learning-rate warm-up over this many steps (0: none)."""
    decay: bool = False
    """Decay the learning rate linearly to 0 over the run."""
    clip: float | None = None
    """Clip the gradient norm to this value (None: no clipping)."""
    desc: str = "train"
    """Label of the progress bar."""


def length_grouped(lengths: Sequence[int], size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of example indices of similar length (less padding).

    The order is shuffled, then sorted by length inside windows of 16 batches, cut into
    batches, and the batches are shuffled: every index appears exactly once.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = size * 16
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    rng.shuffle(batches)
    return batches


def total_steps(n_examples: int, cfg: LoopConfig) -> int:
    steps = cfg.epochs * math.ceil(n_examples / cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps is not None else steps


def _schedule(cfg: LoopConfig, steps: int) -> Callable[[int], float]:
    def factor(s: int) -> float:
        warm = min(1.0, (s + 1) / cfg.warmup) if cfg.warmup else 1.0
        return warm * (max(0.0, 1 - s / steps) if cfg.decay else 1.0)

    return factor


def adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.AdamW:
    """AdamW over parameter groups (a group may set its own ``lr``), without weight decay:
    decay would move parameters that no example supervises (for the MRM's head bias,
    Proposition 1 says those must stay put)."""
    return torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)


def run_loop(
    opt: torch.optim.Optimizer,
    lengths: Sequence[int],
    loss_fn: Callable[[list[int]], Tensor],
    cfg: LoopConfig,
) -> list[float]:
    """Train: for each batch of indices, ``loss_fn(batch).backward()`` and one step of ``opt``.

    ``lengths[i]`` is example i's length, used only to group batches. The schedule of
    ``cfg`` scales every group's learning rate. Returns the loss of every step.
    """
    params = [p for g in opt.param_groups for p in g["params"]]
    steps = total_steps(len(lengths), cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, steps))
    rng = random.Random(cfg.seed)
    losses: list[float] = []
    with tqdm(total=steps, desc=cfg.desc) as bar:
        for _ in range(cfg.epochs):
            for idx in length_grouped(lengths, cfg.batch_size, rng):
                if len(losses) == steps:
                    return losses
                loss = loss_fn(idx)
                loss.backward()
                if cfg.clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                opt.step()
                sched.step()
                opt.zero_grad()
                losses.append(float(loss.detach()))
                bar.update(1)
                recent = losses[-50:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
    return losses


def config_dict(cfg: Any) -> dict[str, object]:
    """A config dataclass's fields as JSON values (tuples become lists), for ``meta.json``."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}


def save_trained(
    out_dir: Path,
    model: PeftModel,
    base_name: str,
    meta: dict[str, object],
    extra: Callable[[Path], None] | None = None,
) -> None:
    """Write the LoRA adapter of ``model`` (naming its base ``base_name``), ``meta.json`` and
    whatever ``extra(folder)`` adds, into ``out_dir`` whole: built beside it and swapped in, so
    a failed run never leaves half an artifact and the old one stays until then."""

    def write(tmp: Path) -> None:
        save_adapter(model, tmp, base_name)
        if extra is not None:
            extra(tmp)
        write_json(tmp / "meta.json", meta)

    write_folder(out_dir, write)


def mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None
