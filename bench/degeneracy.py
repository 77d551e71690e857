"""Fit the degeneracy judge on the gold set and measure it.

Fits :mod:`saffron.reward.degeneracy` on the gold *train* part (read label ``degenerate`` vs
every other label), chooses its threshold on the *validation* part, and reports AUROC,
accuracy and the confusion table on the *test* part — which chooses nothing. With
``--reference NAME`` the fluency features (per-token NLL of the answer under that model) are
added; the reference must not be the policy that wrote the answers.

Writes the fitted judge to ``--out`` (default: the embedded
``src/saffron/artifacts/degeneracy.json``).

Usage::

    python bench/degeneracy.py                          # surface features only
    python bench/degeneracy.py --reference gemma3-270m  # + fluency under Gemma 3 270M
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from gold_judges import confusion

from saffron.data.gold import GoldItem, load_gold
from saffron.reward.degeneracy import (
    FLUENCY_FEATURES,
    SURFACE_FEATURES,
    DegeneracyJudge,
    Scorer,
    choose_threshold,
    feature_rows,
    fit,
    reference_scorer,
)
from saffron.train.judge_data import auroc


def rows_of(items: list[GoldItem], features: tuple[str, ...], scorer: Scorer | None) -> list:
    return feature_rows(
        features,
        [i.prompt for i in items],
        [i.prefill for i in items],
        [i.answer for i in items],
        scorer,
    )


def report(name: str, judge: DegeneracyJudge, items: list[GoldItem], rows: list) -> None:
    probs = judge.probabilities(rows)
    truth = [i.degenerate for i in items]
    called = [p >= judge.threshold for p in probs]
    tp, fn, fp, tn = confusion(called, truth)
    print(
        f"| {name} | {len(items)} | {sum(truth)} | {auroc(probs, truth):.3f} | "
        f"{(tp + tn) / len(items):.3f} | {tp} | {fn} | {fp} | {tn} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", default="", help="reference LM for the fluency features")
    ap.add_argument("--out", type=Path, default=Path("src/saffron/artifacts/degeneracy.json"))
    args = ap.parse_args()
    features = SURFACE_FEATURES + (FLUENCY_FEATURES if args.reference else ())
    scorer = None
    if args.reference:
        from saffron.lm.models import load_model

        ref = load_model(args.reference)
        scorer = reference_scorer(ref.model.eval(), ref.tokenizer)
    parts = {s: load_gold(s) for s in ("train", "validation", "test")}
    rows = {s: rows_of(items, features, scorer) for s, items in parts.items()}
    judge = fit(
        features,
        rows["train"],
        [i.degenerate for i in parts["train"]],
        reference=args.reference,
    )
    t = choose_threshold(
        judge.probabilities(rows["validation"]), [i.degenerate for i in parts["validation"]]
    )
    judge = replace(judge, threshold=t)
    judge.save(args.out)
    print(f"features: {', '.join(features)}; threshold {t:.3f} (validation); → {args.out}\n")
    print("| gold part | n | degenerate (read) | AUROC | accuracy | TP | FN | FP | TN |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in ("train", "validation", "test"):
        report(s, judge, parts[s], rows[s])
    w = sorted(zip(features, judge.weights, strict=True), key=lambda x: -abs(x[1]))
    print("\nweights (standardised): " + ", ".join(f"{f} {v:+.2f}" for f, v in w))


if __name__ == "__main__":
    main()
