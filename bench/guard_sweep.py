"""Guard-training sweep: which training settings make smol-guard agree with its labelling rule.

The sweep is split in two so that the training can run on another machine (a GPU) that has
neither the corpus nor the prompt sets:

1. ``python bench/guard_sweep.py export DATA.pt`` (here, ~2 min): the training examples of the
   own-start corpus (the plain corpus plus the ``policy-ownstart`` answers, see
   ``saffron train-guard --own-start``; build it first), the held-out human-labelled rows, and
   the policy's attacked answers to the 50 held-out AdvBench prompts of ``bench/judge.py``
   (same prompts, prefill and sampling), all as token ids.
2. ``python bench/guard_sweep.py run DATA.pt --model FOLDER [--device cuda] [--jobs N] CONFIG…``:
   one guard per CONFIG, a comma-separated ``key=value`` list over the fields of
   ``GuardTrainConfig`` plus ``ownstart=0|1`` (whether the own-start answers are trained on);
   prints, per config, the held-out human accuracy and AUROC and the agreement with the rule on
   the 50 answers, with the indices of the disagreements. FOLDER is a Hugging Face folder of
   SmolLM2-135M-Instruct (``saffron``'s cache holds one).

Scores are read exactly as training reads them (``_batch`` layout: guard prefix | prompt |
guard infix | response, verdict at the last token), which is also how ``ReadoutGuard`` scores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from judge import auroc  # bench/judge.py, beside this file

from saffron.reward.guard import single_token
from saffron.train.guard_train import (
    MAX_PROMPT_TOKENS,
    MAX_RESPONSE_TOKENS,
    GuardExample,
    GuardTrainConfig,
    _batch,
    template_ids,
    train_guard,
)


def export(path: Path) -> None:
    from judge import attacked_answers  # bench/judge.py, beside this file

    from saffron.data import load_scorer_rows
    from saffron.lm.models import SMOLLM2, load_model
    from saffron.lm.policy import make_policy
    from saffron.paths import cache_dir
    from saffron.train.corpus import read_corpus
    from saffron.train.guard_train import guard_examples, human_heldout, rule_unsafe

    loaded = load_model(SMOLLM2)
    tok = loaded.tokenizer
    enc = lambda t: tok.encode(t, add_special_tokens=False)  # noqa: E731
    corpus = read_corpus(cache_dir() / "corpus" / f"{SMOLLM2}-seed0-ownstart.jsonl")
    examples = guard_examples(corpus, enc)
    human = [
        (
            tuple(enc(r.objective))[:MAX_PROMPT_TOKENS],
            tuple(enc(r.response))[:MAX_RESPONSE_TOKENS],
            bool(r.harmful),
        )
        for r in load_scorer_rows()
        if r.harmful is not None and human_heldout(r)
    ]
    attacked = [
        (seq.prompt, seq.generated, rule_unsafe(True, text, prompt), text)
        for prompt, seq, text in attacked_answers(make_policy(loaded), 50)
    ]
    torch.save(
        {
            "examples": [(e.prompt, e.response, e.unsafe, e.source) for e in examples],
            "human": human,
            "attacked": attacked,
        },
        path,
    )
    print(f"{len(examples)} examples, {len(human)} human rows, {len(attacked)} answers → {path}")


def parse_config(text: str) -> tuple[GuardTrainConfig, bool]:
    """``key=value,…`` over GuardTrainConfig's fields (plus ``ownstart``) → (config, ownstart)."""
    cfg, own = GuardTrainConfig(), True
    types = {f.name: type(getattr(cfg, f.name)) for f in fields(cfg)}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key == "ownstart":
            own = value == "1"
        elif key == "targets":
            cfg = replace(cfg, targets=tuple(value.split("+")))
        elif key in types:
            cfg = replace(cfg, **{key: types[key](value)})
        else:
            raise SystemExit(f"unknown config key {key!r}")
    return cfg, own


@torch.no_grad()
def rewards(base: Any, rows: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> list[float]:
    """Final-position rewards of (prompt, response) rows under the LoRA-carrying ``base``."""
    tok = base.tokenizer
    prefix, infix = template_ids(tok)
    head = base.model.get_output_embeddings().weight
    diff = head[single_token(tok, " safe")] - head[single_token(tok, " unsafe")]
    dev = head.device
    base.model.eval()
    out: list[float] = []
    for i in range(0, len(rows), 16):
        batch = [GuardExample(p, r, False, "") for p, r in rows[i : i + 16]]
        ids, attn, _, last = (t.to(dev) for t in _batch(batch, prefix, infix, 0))
        hidden = base.model.base_model(input_ids=ids, attention_mask=attn).last_hidden_state
        out.extend((hidden[torch.arange(len(batch), device=dev), last] @ diff).tolist())
    return out


def one(data_path: Path, model: str, device: str, config: str, limit: int) -> dict[str, Any]:
    from saffron.lm.models import load_model
    from saffron.runtime import RuntimeConfig

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 as on the CPU
    data = torch.load(data_path)
    cfg, own = parse_config(config)
    examples = [
        GuardExample(tuple(p), tuple(r), u, s)
        for p, r, u, s in data["examples"]
        if own or s != "policy-ownstart"
    ][: limit or None]
    base = load_model(model, RuntimeConfig(device=device))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_guard(base, examples, Path(tmp) / "guard", cfg)
    train_s = time.perf_counter() - t0
    human = data["human"][: limit or None]
    h = rewards(base, [(p, r) for p, r, _ in human])
    labels = [y for _, _, y in human]
    acc = sum((x < 0) == y for x, y in zip(h, labels, strict=True)) / len(labels)
    att = data["attacked"]
    a = rewards(base, [(p, r) for p, r, _, _ in att])
    missed = [i for i, (x, row) in enumerate(zip(a, att, strict=True)) if (x < 0) != row[2]]
    return {
        "config": config,
        "examples": len(examples),
        "train_s": round(train_s, 1),
        "human_acc": round(acc, 3),
        "human_auroc": round(auroc([-x for x in h], labels), 3),
        "agreement": round(1 - len(missed) / len(att), 3),
        "missed": missed,
        "missed_rewards": [round(a[i], 2) for i in missed],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("data", type=Path)
    for name in ("run", "one"):
        p = sub.add_parser(name)
        p.add_argument("data", type=Path)
        p.add_argument("--model", required=True)
        p.add_argument("--device", default="cpu")
        p.add_argument("--jobs", type=int, default=1)
        p.add_argument("--limit", type=int, default=0, help="first N examples (a smoke test)")
        p.add_argument("configs", nargs="+")
    args = ap.parse_args()
    if args.cmd == "export":
        export(args.data)
    elif args.cmd == "one":
        for c in args.configs:
            print(json.dumps(one(args.data, args.model, args.device, c, args.limit)), flush=True)
    else:
        # one process per config, ``--jobs`` at a time (they share the device)
        procs: list[subprocess.Popen[bytes]] = []
        pending = list(args.configs)
        base = [sys.executable, __file__, "one", str(args.data), "--model", args.model]
        base += ["--limit", str(args.limit)]
        while pending or procs:
            while pending and len(procs) < args.jobs:
                procs.append(subprocess.Popen([*base, "--device", args.device, pending.pop(0)]))
            procs[0].wait()
            procs = [p for p in procs if p.poll() is None]


if __name__ == "__main__":
    main()
