"""``saffron train-policy``: safety fine-tuning of a policy with LoRA (``smol-aligned``).

The paper's phenomenon needs an aligned policy that refuses harmful requests and that a
harmful prefill breaks (Llama 3 8B Instruct: no-defence ASR 0.66 / 0.90 under a 10-token
prefill). The embedded base, SmolLM2-135M-Instruct, complies with most harmful requests, so
this module makes the aligned world:

* harmful prompts of the *train* splits → a written refusal, varied (many refusals, half of
  them followed by a short safe redirection) so that the policy does not learn one string;
* benign prompts (the template prompts, ordinary requests of many kinds, and the
  look-harmful-but-safe training set) → the base policy's own greedy answers:
  self-distillation keeps its helpfulness and its style (an answer in which the base itself
  declines, :func:`saffron.data.says_refusal`, is left out);
* optionally (``deep_fraction`` > 0), *deep alignment* (Qi et al. 2024, "Safety Alignment
  Should Be Made More Than Just a Few Tokens Deep"): for that fraction of harmful prompts, one
  more example whose context already holds the first k tokens of a harmful answer (k uniform
  in 1 … ``deep_max_prefix``) and whose target turns it into a refusal (a written recovery).

Without the deep examples, every refusal starts at the first answer token: the alignment is a
few tokens deep, and a harmful prefill walks past it, as in the paper.

Loss: next-token cross-entropy on the target tokens only (the context — template, prompt,
harmful start — is never a target), mean over the target tokens of a batch. The LM head is
applied only at target positions.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from saffron.data import PromptRow, is_refusal, jsonl_objects, says_refusal
from saffron.errors import SaffronError
from saffron.files import append_jsonl
from saffron.lm.batching import batches
from saffron.lm.chat import ChatFormat
from saffron.lm.models import POLICY_KIND, LoadedModel
from saffron.lm.policy import Policy, bulk_greedy
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
from saffron.train.texts import written_texts

REFUSAL, BENIGN, DEEP, USER = "refusal", "benign", "deep", "user"


@dataclass(frozen=True)
class PolicyExample:
    """One supervised continuation: the policy reads ``context`` and learns ``target``."""

    context: tuple[int, ...]
    """The policy's input: template, prompt, infix, and for a deep example a harmful start."""
    target: tuple[int, ...]
    """The tokens it learns to continue with (ending in a stop token when the answer ended)."""
    source: str
    """``refusal``, ``benign``, ``deep`` or ``user`` (rows of a ``--data`` file)."""


@dataclass(frozen=True)
class PolicyTrainConfig:
    """Settings of ``saffron train-policy`` (defaults: the committed ``smol-aligned``)."""

    seed: int = 0
    """Seeds the LoRA initialisation, the data mix and the example order."""
    epochs: int = 2
    """Passes over the examples."""
    batch_size: int = 8
    """Examples per optimiser step."""
    lr: float = 3e-4
    """Peak learning rate (10 warm-up steps, then linear decay to 0)."""
    rank: int = 16
    """LoRA rank (alpha = 2 × rank)."""
    targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    """Modules with a LoRA adapter, on every layer (the MLPs too: with attention alone the
    policy learned "a request phrased like a harmful one → refuse" and over-refused)."""
    per_set: int | None = 100
    """Harmful training prompts taken from each harmful set's train split (None: all). With
    the decision term on, this sets the refuse-or-answer prior (398 refusals to 801 benign
    answers at 100): 50 let 17% of harmful validation requests through, 100 let 4% through at
    13% over-refusal on validation (BENCHMARKS.md)."""
    redirect_fraction: float = 0.5
    """Share of refusals followed by a short safe redirection."""
    deep_fraction: float = 0.0
    """Share of harmful prompts that also get a deep-alignment example (0: shallow)."""
    deep_max_prefix: int = 24
    """A deep example's harmful start is 1 … this many tokens of a harmful answer."""
    max_answer_tokens: int = 96
    """Length cap of the base policy's benign answers (self-distillation targets)."""
    decision_weight: float = 1.0
    """Weight of the decision term: the mean over *examples* of the cross-entropy of each
    example's first target token, added to the token-mean loss. In the token mean a refusal's
    first token (1 of ~25) outweighs a benign answer's (1 of ~96) about four to one, so the
    refuse-or-answer choice is learned mostly from refusals; the decision term weighs every
    example's choice once (0: off). Deep examples are not in it (see :func:`sft_loss`)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.rank < 1:
            raise SaffronError("epochs, batch size, learning rate and rank must be positive")
        for name in ("redirect_fraction", "deep_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SaffronError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.decision_weight < 0:
            raise SaffronError(f"decision_weight must be ≥ 0, got {self.decision_weight}")
        if self.deep_max_prefix < 1 or self.max_answer_tokens < 1:
            raise SaffronError("deep_max_prefix and max_answer_tokens must be positive")
        if self.per_set is not None and self.per_set < 1:
            raise SaffronError(f"per_set must be positive, got {self.per_set}")


def _written(rng: random.Random, first: tuple[str, ...], redirect_fraction: float) -> str:
    """One of ``first``, followed by a safe redirection with probability ``redirect_fraction``."""
    text = rng.choice(first)
    if rng.random() < redirect_fraction:
        text += rng.choice(written_texts().redirections)
    return text


def refusal_text(rng: random.Random, redirect_fraction: float) -> str:
    """A written refusal, sometimes followed by a safe redirection."""
    return _written(rng, written_texts().refusals, redirect_fraction)


def recovery_text(rng: random.Random, redirect_fraction: float) -> str:
    """What a deep example learns after a harmful start: a recovery that ends the answer as a
    refusal, sometimes with a redirection."""
    return _written(rng, written_texts().recoveries, redirect_fraction)


@dataclass(frozen=True)
class PolicyData:
    """What the examples are built from.

    ``harmful``: harmful training prompts; ``answers``: a harmful answer per prompt id (deep
    examples only; prompts without one get no deep example); ``benign``: (prompt, the base
    policy's answer tokens) pairs; ``user``: (prompt, response text) rows of a data file.
    """

    harmful: list[PromptRow]
    answers: dict[str, str]
    benign: list[tuple[str, tuple[int, ...]]]
    user: list[tuple[str, str]]


def policy_examples(
    chat: ChatFormat, data: PolicyData, cfg: PolicyTrainConfig
) -> list[PolicyExample]:
    """Every training example, deterministically from ``cfg.seed``."""
    rng = random.Random(f"policy-data:{cfg.seed}")
    eos = min(chat.eos_ids)

    def context(prompt: str, start: tuple[int, ...] = ()) -> tuple[int, ...]:
        return chat.sequence(prompt, prefill_tokens=start).tokens

    out: list[PolicyExample] = []
    for row in data.harmful:
        target = (*chat.encode(refusal_text(rng, cfg.redirect_fraction)), eos)
        out.append(PolicyExample(context(row.prompt), target, REFUSAL))
        # the draw happens for every prompt, so the shallow and deep mixes share their refusals
        deep = rng.random() < cfg.deep_fraction
        k = rng.randint(1, cfg.deep_max_prefix)
        recovery = recovery_text(rng, cfg.redirect_fraction)
        answer = data.answers.get(row.id)
        if deep and answer:
            start = chat.encode(answer)[:k]
            turn = (*chat.encode(recovery), eos)
            out.append(PolicyExample(context(row.prompt, start), turn, DEEP))
    for prompt, reply in data.benign:
        # the base itself declines a few benign prompts: distilling that would teach over-refusal
        if not says_refusal(chat.decode(reply)):
            out.append(PolicyExample(context(prompt), reply, BENIGN))
    for prompt, response in data.user:
        out.append(PolicyExample(context(prompt), (*chat.encode(response), eos), USER))
    return out


def self_answers(
    policy: Policy, prompts: list[str], path: Path, max_new_tokens: int, batch_size: int = 32
) -> list[tuple[str, tuple[int, ...]]]:
    """The policy's greedy answers to ``prompts`` (stop token kept when it finished), cached
    in the JSONL ``path`` by prompt text so that a rerun or a second model reuses them."""
    known: dict[str, tuple[int, ...]] = {}
    if path.is_file():
        for _, obj in jsonl_objects(path):
            known[str(obj["prompt"])] = tuple(obj["tokens"])
    todo = [p for p in dict.fromkeys(prompts) if p not in known]
    for part in batches(todo, batch_size):
        seqs = [policy.chat.sequence(p, reserve=max_new_tokens) for p in part]
        answers = bulk_greedy(policy, seqs, max_new_tokens)
        known.update(zip(part, answers, strict=True))
        rows = [{"prompt": p, "tokens": list(t)} for p, t in zip(part, answers, strict=True)]
        append_jsonl(path, rows, ensure_ascii=True)
    return [(p, known[p]) for p in prompts]


def read_policy_data(path: Path) -> tuple[list[PromptRow], list[tuple[str, str]]]:
    """A ``--data`` file: JSONL rows ``{"prompt": str, "harmful": bool, "response": str?}``.

    A harmful row without a response gets a written refusal; a row with a response learns it.
    Refused, each as ``file:line: …``: a missing or non-boolean ``harmful``, a benign row
    without a response, a harmful row whose response is not a refusal, a benign row whose
    response is one (both would teach the opposite of their label), and a file with no rows.
    """
    harmful: list[PromptRow] = []
    user: list[tuple[str, str]] = []
    for lineno, obj in jsonl_objects(path):
        where = f"{path}:{lineno}"
        prompt, label, response = obj.get("prompt"), obj.get("harmful"), obj.get("response")
        if not isinstance(prompt, str) or not prompt.strip():
            raise SaffronError(f"{where}: 'prompt' must be a non-empty string")
        if not isinstance(label, bool):
            raise SaffronError(f"{where}: 'harmful' must be true or false, got {label!r}")
        if response is not None and (not isinstance(response, str) or not response.strip()):
            raise SaffronError(f"{where}: 'response' must be a non-empty string when given")
        if response is None and not label:
            raise SaffronError(f"{where}: a benign row needs a 'response' to learn")
        if response is not None and label and not is_refusal(response, prompt):
            raise SaffronError(f"{where}: labelled harmful, but its response is not a refusal")
        if response is not None and not label and is_refusal(response):
            raise SaffronError(f"{where}: labelled benign, but its response is a refusal")
        if response is None:
            harmful.append(PromptRow(f"data-{lineno}", prompt, source=str(path)))
        else:
            user.append((prompt, response))
    if not harmful and not user:
        raise SaffronError(f"{path}: no rows")
    return harmful, user


def _batch(
    examples: list[PolicyExample], pad: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Right-padded ids and mask (B, T), and for every target token its (row, position that
    predicts it, token id)."""
    seqs = [ex.context + ex.target for ex in examples]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    attn = torch.zeros(len(seqs), width, dtype=torch.long)
    row: list[int] = []
    pos: list[int] = []
    tok: list[int] = []
    for b, (s, ex) in enumerate(zip(seqs, examples, strict=True)):
        ids[b, : len(s)] = torch.tensor(s)
        attn[b, : len(s)] = 1
        n = len(ex.context)
        row += [b] * len(ex.target)
        pos += range(n - 1, n - 1 + len(ex.target))
        tok += ex.target
    return ids, attn, torch.tensor(row), torch.tensor(pos), torch.tensor(tok)


def sft_loss(
    decoder: nn.Module,
    head: nn.Module,
    examples: list[PolicyExample],
    pad: int,
    dev: torch.device,
    decision_weight: float = 0.0,
) -> Tensor:
    """Mean next-token cross-entropy over the target tokens of ``examples``, plus
    ``decision_weight`` × the mean over examples of their first target token's cross-entropy
    (see :attr:`PolicyTrainConfig.decision_weight`). Deep examples are left out of the
    decision term: their first target token is no refuse-or-answer choice at the start of an
    answer but the turn mid-answer, and weighing it up taught the policy to break off into
    punctuation ("—. —. —.") in benign answers that merely look harmful."""
    ids, attn, row, pos, tok = (t.to(dev) for t in _batch(examples, pad))
    hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state
    logits = head(hidden[row, pos]).float()
    per_token = nn.functional.cross_entropy(logits, tok, reduction="none")
    loss = per_token.mean()
    if decision_weight > 0:
        lengths = torch.tensor([len(ex.target) for ex in examples], device=dev)
        first = torch.cumsum(lengths, 0) - lengths  # index of each example's first target token
        at_start = torch.tensor([ex.source != DEEP for ex in examples], device=dev)
        chosen = first[(lengths > 0) & at_start]
        if chosen.numel():
            loss = loss + decision_weight * per_token[chosen].mean()
    return loss


def train_policy(
    base: LoadedModel,
    examples: list[PolicyExample],
    out_dir: Path,
    cfg: PolicyTrainConfig,
    info: dict[str, object],
) -> dict[str, object]:
    """Train the LoRA adapter on ``examples`` and write it with ``meta.json`` to ``out_dir``
    (atomically); ``info`` is merged into the meta. Returns the meta."""
    if not examples:
        raise SaffronError("no training examples")
    torch.manual_seed(cfg.seed)
    dev = next(base.model.parameters()).device
    peft = add_lora(base.model, LoraSpec(cfg.rank, 2 * cfg.rank, cfg.targets))
    peft.train()
    decoder: nn.Module = base.model.base_model
    head = base.model.get_output_embeddings()
    pad = int(base.tokenizer.pad_token_id or 0)
    loop = LoopConfig(
        seed=cfg.seed,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        warmup=10,
        decay=True,
        clip=1.0,
        desc="train-policy",
    )
    loss_fn: Callable[[list[int]], Tensor] = lambda idx: sft_loss(  # noqa: E731
        decoder, head, [examples[i] for i in idx], pad, dev, cfg.decision_weight
    )
    t0 = time.perf_counter()
    params = [p for p in peft.parameters() if p.requires_grad]
    lengths = [len(ex.context) + len(ex.target) for ex in examples]
    losses = run_loop(adamw([{"params": params}], cfg.lr), lengths, loss_fn, loop)
    meta: dict[str, object] = {
        "kind": POLICY_KIND,
        "base": base.name,
        **info,
        "config": config_dict(cfg),
        "examples": len(examples),
        "examples_by_source": dict(sorted(Counter(ex.source for ex in examples).items())),
        "steps": len(losses),
        "first_loss_mean50": mean(losses[:50]),
        "final_loss_mean50": mean(losses[-50:]),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }

    save_trained(out_dir, peft, base.name, meta)
    return meta


def check_out_dir(out_dir: Path, base: str) -> None:
    """Refuse an output folder that holds something other than a policy of ``base``: another
    model, another kind of artifact, or unrelated files. Nothing is written before this."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise SaffronError(f"{out_dir} exists and is not a folder; choose another --out")
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        if any(out_dir.iterdir()):
            raise SaffronError(
                f"{out_dir} holds files that are not a Saffron policy; choose another --out"
            )
        return
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise SaffronError(f"{out_dir} holds a corrupt meta.json; choose another --out") from None
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind != POLICY_KIND:
        what = "a guard or MRM" if kind is None else f"a {kind}"
        raise SaffronError(f"{out_dir} holds {what}, not a policy; choose another --out")
    if meta.get("base") != base:
        raise SaffronError(
            f"{out_dir} holds a policy trained from {meta.get('base')!r}, not {base!r}; "
            "choose another --out"
        )
