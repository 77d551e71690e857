"""Training ``smol-guard``: SmolLM2-135M + LoRA, a verdict at every response position.

Data (see :func:`guard_examples`):

* the response corpus (:mod:`saffron.train.corpus`): the policy's own answers to harmful
  prompts with and without a compliance prefill, written refusals, answers to benign prompts —
  labelled by :func:`rule_unsafe`;
* the train part of PyRIT's human-labelled (objective, response, score) rows, labelled by the
  human score (harmful ⇔ mean score ≥ 0.5). The other part is held out for validation.

Objective: logistic loss on reward = logit(" safe") − logit(" unsafe") (label safe ⇒ reward > 0)
at the final position, plus half the mean loss over every response prefix with the same label —
a process reward that estimates, after each token, whether the finished answer will be unsafe.
LoRA sits on the upper layers only, so the backward pass stops halfway down the network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from saffron.data import ScorerRow, is_refusal, load_scorer_rows
from saffron.errors import SaffronError
from saffron.files import unit_hash
from saffron.lm.models import LoadedModel
from saffron.reward.guard import GUARD_SYSTEM, guard_template, single_token
from saffron.train.corpus import REDIRECT, CorpusItem
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

HUMAN_HELDOUT_FRACTION = 0.3
MAX_PROMPT_TOKENS = 96
MAX_RESPONSE_TOKENS = 128


def rule_unsafe(harmful_prompt: bool, response: str, prompt: str = "") -> bool:
    """The labelling rule for responses without a human label.

    Unsafe ⇔ the prompt is harmful AND the response is not a refusal (garak's refusal phrases,
    :func:`saffron.data.is_refusal`, where a topic phrase that merely repeats the ``prompt``
    does not count) AND it says something (non-blank). Answers to benign prompts are safe; an
    empty answer is safe. Ignoring repeated phrases raises the rule's accuracy on PyRIT's
    human-labelled rows on both the training and the held-out split (BENCHMARKS.md).
    """
    return harmful_prompt and bool(response.strip()) and not is_refusal(response, prompt)


def human_heldout(row: ScorerRow) -> bool:
    """Whether a human-labelled row is held out for validation (stable hash of its text)."""
    key = f"{row.objective}\x00{row.response}".encode()
    return unit_hash(key) < HUMAN_HELDOUT_FRACTION


@dataclass(frozen=True)
class GuardExample:
    prompt: tuple[int, ...]
    response: tuple[int, ...]
    unsafe: bool
    source: str


def guard_examples(
    corpus: list[CorpusItem],
    encode: Callable[[str], list[int]],
    *,
    human: bool = True,
) -> list[GuardExample]:
    """Training examples: corpus items by the rule, human rows (train part) by their label.

    A redirection attempt (``policy-redirect``) is kept only when the rule calls it safe: the
    small policy often ignores the instruction to redirect, so one without a refusal phrase is
    neither a known redirection nor a known compliance, and is left out.
    """
    out = []
    for it in corpus:
        unsafe = rule_unsafe(it.harmful, it.response, it.prompt)
        if it.kind == REDIRECT and unsafe:
            continue
        out.append(
            GuardExample(
                tuple(encode(it.prompt))[:MAX_PROMPT_TOKENS],
                tuple(it.response_tokens)[:MAX_RESPONSE_TOKENS],
                unsafe,
                it.kind,
            )
        )
    if human:
        for row in load_scorer_rows():
            if row.harmful is None or human_heldout(row):
                continue
            out.append(
                GuardExample(
                    tuple(encode(row.objective))[:MAX_PROMPT_TOKENS],
                    tuple(encode(row.response))[:MAX_RESPONSE_TOKENS],
                    bool(row.harmful),
                    "human",
                )
            )
    return out


@dataclass(frozen=True)
class GuardTrainConfig:
    """Settings of ``saffron train-guard`` (defaults: the embedded smol-guard)."""

    seed: int = 0
    """Seeds the LoRA initialisation and the example order."""
    epochs: int = 1
    """Passes over the examples."""
    batch_size: int = 8
    """Examples per optimiser step."""
    lr: float = 3e-4
    """Peak learning rate (20 warm-up steps, then linear decay to 0)."""
    rank: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA alpha (the command line sets 2 × rank)."""
    first_layer: int = 14
    """LoRA on layers first_layer … last."""
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
    """Modules with a LoRA adapter."""
    safe_word: str = " safe"
    """The verdict token whose logit counts for safe (one token)."""
    unsafe_word: str = " unsafe"
    """The verdict token whose logit counts for unsafe (one token)."""
    balance: float = 0.0
    """Exponent of each source's minority-class weight (see class_weights); 0 = unweighted."""
    human_weight: float = 1.0
    """Loss weight of the human-labelled rows against the rule-labelled corpus.

    Applied before the mean-1 rescaling: where the two disagree (a harmful request answered
    with one of the rule's topic words in it), this sets which one the guard follows."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.rank < 1:
            raise SaffronError("epochs, batch size, learning rate and rank must be positive")
        if not 0 <= self.balance <= 1:
            raise SaffronError(f"balance must be in [0, 1], got {self.balance}")
        if self.human_weight < 0:
            raise SaffronError(f"human weight must be ≥ 0, got {self.human_weight}")


def class_weights(examples: list[GuardExample], power: float = 0.5) -> list[float]:
    """Per-example loss weights that soften each source's class imbalance; mean weight 1.

    Within one source (the policy's answers, prefilled answers, human rows, ...) the minority
    label gets weight (n_major / n_minor) ** power, the majority 1: the policy's own answers to
    harmful prompts are ~92% unsafe by the rule, and unweighted training learns "harmful prompt
    → unsafe" instead of reading the answer. power 1 weighs both labels of a source equally in
    total, 0.5 (the square root) stops halfway, 0 leaves every weight 1. Single-label sources
    keep weight 1. Weights are then scaled so their mean is 1, which keeps the loss scale (and
    so the learning rate) as without them.
    """
    counts: dict[str, list[int]] = {}
    for ex in examples:
        counts.setdefault(ex.source, [0, 0])[int(ex.unsafe)] += 1
    raw = []
    for ex in examples:
        n_safe, n_unsafe = counts[ex.source]
        mine, other = (n_unsafe, n_safe) if ex.unsafe else (n_safe, n_unsafe)
        raw.append((other / mine) ** power if 0 < mine < other else 1.0)
    return _mean_one(raw)


def _mean_one(raw: list[float]) -> list[float]:
    mean = sum(raw) / len(raw) if raw else 1.0
    return [w / mean for w in raw] if mean > 0 else raw


def source_weights(
    examples: list[GuardExample], balance: float, human_weight: float
) -> list[float]:
    """:func:`class_weights`, with the human rows further scaled by ``human_weight``; mean 1."""
    raw = [
        w * (human_weight if ex.source == "human" else 1.0)
        for w, ex in zip(class_weights(examples, balance), examples, strict=True)
    ]
    return _mean_one(raw)


def template_ids(tok: PreTrainedTokenizerBase) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Token ids of the guard template around the prompt: (prefix, infix), as in training."""
    before, after = guard_template(tok, GUARD_SYSTEM)
    enc = lambda t: tuple(tok.encode(t, add_special_tokens=False))  # noqa: E731
    return enc(before), enc(after)


def _batch(
    examples: list[GuardExample], prefix: tuple[int, ...], infix: tuple[int, ...], pad: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Right-padded ids (B, T), attention mask, response-position mask (B, T), final index."""
    rows = [prefix + ex.prompt + infix + ex.response for ex in examples]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros(len(rows), width, dtype=torch.long)
    resp = torch.zeros(len(rows), width, dtype=torch.bool)
    last = torch.zeros(len(rows), dtype=torch.long)
    for b, (r, ex) in enumerate(zip(rows, examples, strict=True)):
        ids[b, : len(r)] = torch.tensor(r)
        attn[b, : len(r)] = 1
        resp[b, len(r) - len(ex.response) : len(r)] = True
        last[b] = len(r) - 1  # the verdict of the whole answer (of the empty one: after infix)
    return ids, attn, resp, last


def guard_loss(
    decoder: nn.Module,
    diff: Tensor,
    batch: list[GuardExample],
    w: Tensor,
    template: tuple[tuple[int, ...], tuple[int, ...], int],
) -> Tensor:
    """Weighted logistic loss on the final verdict plus half the weighted mean over every
    answer prefix (the process reward), with reward = diff · h (see the module doc).
    ``template`` is (prefix ids, infix ids, pad id) of the guard's input."""
    dev = w.device
    ids, attn, resp, last = (t.to(dev) for t in _batch(batch, *template))
    hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state
    reward = hidden @ diff  # (B, T)
    target = torch.tensor([0.0 if ex.unsafe else 1.0 for ex in batch], device=dev)
    final = reward[torch.arange(len(batch), device=dev), last]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    loss_final = (w * bce(final, target, reduction="none")).mean()
    per_pos = bce(reward, target[:, None].expand_as(reward), reduction="none")
    loss_proc = (per_pos * resp * w[:, None]).sum() / resp.sum().clamp(min=1)
    return loss_final + 0.5 * loss_proc


def train_guard(
    base: LoadedModel, examples: list[GuardExample], out_dir: Path, cfg: GuardTrainConfig
) -> dict[str, object]:
    """Train the LoRA adapter and write it with ``meta.json`` to ``out_dir``.

    Trains where ``base.model`` sits (the CPU, or a GPU after ``--device cuda``); the order of
    the examples and the LoRA initialisation depend only on ``cfg.seed``.
    """
    torch.manual_seed(cfg.seed)
    dev = next(base.model.parameters()).device
    tok = base.tokenizer
    template = (*template_ids(tok), int(tok.pad_token_id or 0))
    model, diff = _add_guard_lora(base, cfg)
    decoder: nn.Module = base.model.base_model  # the decoder inside, now carrying LoRA layers
    params = [p for p in model.parameters() if p.requires_grad]
    weights = torch.tensor(source_weights(examples, cfg.balance, cfg.human_weight), device=dev)
    loop = LoopConfig(
        seed=cfg.seed,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        warmup=20,
        decay=True,
        clip=1.0,
        desc="train-guard",
    )
    t0 = time.perf_counter()
    losses = run_loop(
        adamw([{"params": params}], cfg.lr),
        [len(ex.prompt) + len(ex.response) for ex in examples],
        lambda idx: guard_loss(decoder, diff, [examples[i] for i in idx], weights[idx], template),
        loop,
    )
    meta: dict[str, object] = {
        "base": base.name,
        "safe_token": cfg.safe_word,
        "unsafe_token": cfg.unsafe_word,
        "system": GUARD_SYSTEM,
        "config": config_dict(cfg),
        "examples": len(examples),
        "examples_by_source": _count(examples),
        "steps": len(losses),
        "final_loss_mean20": mean(losses[-20:]) or 0.0,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }

    save_trained(out_dir, model, base.name, meta)
    return meta


def _add_guard_lora(base: LoadedModel, cfg: GuardTrainConfig) -> tuple[PeftModel, Tensor]:
    """Inject the LoRA adapter into ``base.model`` (mutated, in training mode); return the
    PEFT wrapper and the reward direction ``w_safe − w_unsafe`` of the LM head (d,)."""
    tok = base.tokenizer
    safe_id, unsafe_id = single_token(tok, cfg.safe_word), single_token(tok, cfg.unsafe_word)
    n_layers = int(base.model.config.num_hidden_layers)
    spec = LoraSpec(cfg.rank, cfg.alpha, cfg.targets, min(cfg.first_layer, n_layers - 1))
    model = add_lora(base.model, spec)
    model.train()
    head_w = base.model.get_output_embeddings().weight.detach()
    return model, (head_w[safe_id] - head_w[unsafe_id]).clone()  # reward = diff · h


def _count(examples: list[GuardExample]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for ex in examples:
        d = out.setdefault(ex.source, {"safe": 0, "unsafe": 0})
        d["unsafe" if ex.unsafe else "safe"] += 1
    return out
