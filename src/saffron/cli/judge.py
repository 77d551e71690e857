"""Subcommand ``train-judge``: the independent judge ``gemma-judge``. Every default comes from
:class:`~saffron.train.judge_train.JudgeTrainConfig`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from saffron.cli.args import add_runtime, runtime
from saffron.cli.args import integer as _int
from saffron.lm.models import GEMMA3
from saffron.train.judge_train import JudgeTrainConfig


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``train-judge``."""
    d = JudgeTrainConfig
    tj = sub.add_parser(
        "train-judge",
        help="train the independent judge gemma-judge (LoRA + verdict head on Gemma 3 270M)",
        description="Train the independent judge on labels read by people only: PyRIT's "
        "human-labelled rows (minus smol-guard's held-out part) and the gold set's train part. "
        "The gold validation part picks the epoch and the threshold; the test part is never "
        "read. Example: saffron train-judge  (-> src/saffron/artifacts/gemma-judge)",
    )
    tj.add_argument("--base", default=GEMMA3, help="backbone model name")
    tj.add_argument("--epochs", type=_int, default=d.epochs, help="most epochs (best kept)")
    tj.add_argument("--batch-size", type=_int, default=d.batch_size)
    tj.add_argument("--lr", type=float, default=d.lr, help="LoRA learning rate")
    tj.add_argument("--head-lr", type=float, default=d.head_lr, help="verdict-head learning rate")
    tj.add_argument("--rank", type=_int, default=d.rank, help="LoRA rank (alpha = 2 × rank)")
    tj.add_argument("--first-layer", type=_int, default=d.first_layer, help="LoRA from this layer")
    tj.add_argument(
        "--gold-weight", type=float, default=d.gold_weight, help="loss weight of a gold item"
    )
    tj.add_argument("--no-calibrate", action="store_true", help="keep the trained bias as is")
    tj.add_argument("--seed", type=_int, default=d.seed)
    add_runtime(tj)
    tj.add_argument("--out", default=None, help="output folder (default: the embedded one)")


def cmd_train_judge(args: argparse.Namespace) -> int:
    from saffron.lm.models import load_model
    from saffron.paths import artifacts_dir
    from saffron.reward.independent import GEMMA_JUDGE
    from saffron.train.judge_data import gold_examples, human_examples
    from saffron.train.judge_train import train_judge

    cfg = JudgeTrainConfig(
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        rank=args.rank,
        alpha=2 * args.rank,
        first_layer=args.first_layer,
        gold_weight=args.gold_weight,
        calibrate=not args.no_calibrate,
    )
    rt = runtime(args)
    out = Path(args.out) if args.out else artifacts_dir() / GEMMA_JUDGE
    train = human_examples() + gold_examples("train")
    validation = gold_examples("validation")
    base = load_model(args.base, rt)
    meta = train_judge(base, train, validation, out, cfg)
    print(json.dumps(meta, indent=2))
    print(f"judge written to {out}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"train-judge": cmd_train_judge}
