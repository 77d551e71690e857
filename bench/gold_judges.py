"""Every judge against the gold set (answers read by hand) and PyRIT's held-out human rows.

For the gold *test* part (it chooses nothing; ``--part validation`` for choosing):

* safety judges (``guard``, ``independent``, ``rule``): harmful (read) vs every other label —
  AUROC of the reward (``-reward`` ranks harmful first; the rule is binary, so its AUROC is
  (TPR + TNR) / 2), accuracy at the judge's own threshold (reward < 0; the rule's verdict) and
  the confusion table;
* the degeneracy judge: degenerate (read) vs every other label, the same figures;
* the guards on PyRIT's held-out human rows (``saffron.train.guard_train.human_heldout``):
  AUROC, as for smol-guard's validation;
* ``--quote N``: N gold items (seeded) with their read label and every judge's verdict;
* ``--by-label``: per read label, the share each safety judge calls unsafe (where a judge's
  false alarms come from).

Usage::

    python bench/gold_judges.py --judges guard,rule,degeneracy [--guard smol-guard]
        [--independent gemma-judge] [--part test] [--quote 20] [--by-label]
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from saffron.data import load_scorer_rows
from saffron.data.gold import LABELS, load_gold
from saffron.eval.judges import Answer, judge_answers, load_scorers, parse_judges
from saffron.train.guard_train import human_heldout
from saffron.train.judge_data import auroc


def confusion(called: list[bool], truth: list[bool]) -> tuple[int, int, int, int]:
    tp = sum(c and t for c, t in zip(called, truth, strict=True))
    fp = sum(c and not t for c, t in zip(called, truth, strict=True))
    fn = sum(t and not c for c, t in zip(called, truth, strict=True))
    return tp, fn, fp, len(truth) - tp - fp - fn


def row(name: str, scores: list[float], called: list[bool], truth: list[bool]) -> str:
    tp, fn, fp, tn = confusion(called, truth)
    acc = (tp + tn) / len(truth)
    return (
        f"| {name} | {len(truth)} | {sum(truth)} | {auroc(scores, truth):.3f} | {acc:.3f} | "
        f"{tp} | {fn} | {fp} | {tn} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--judges", default="all")
    ap.add_argument("--guard", default="smol-guard")
    ap.add_argument("--independent", default="gemma-judge")
    ap.add_argument("--degeneracy", default="degeneracy.json", help="file in the artifacts")
    ap.add_argument("--part", default="test", choices=("train", "validation", "test"))
    ap.add_argument("--quote", type=int, default=0)
    ap.add_argument("--by-label", action="store_true", help="unsafe share per read label")
    ap.add_argument("--no-human", action="store_true", help="skip PyRIT's held-out rows")
    args = ap.parse_args()
    names = parse_judges(args.judges)
    scorers, threshold = load_scorers(
        names, guard=args.guard, independent=args.independent, degeneracy=args.degeneracy
    )
    items = load_gold(args.part)
    answers = [Answer(i.prompt, i.prefill, i.answer) for i in items]
    verdicts = judge_answers(answers, scorers, threshold)
    harmful = [i.harmful for i in items]
    print(f"gold {args.part} part: {len(items)} items\n")
    print("| judge | n | positives (read) | AUROC | accuracy | TP | FN | FP | TN |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("guard", "independent"):
        if name in scorers:
            s = [-v[f"{name}_reward"] for v in verdicts]
            print(row(f"{name} (harmful)", s, [v[f"unsafe_{name}"] for v in verdicts], harmful))
    if "rule" in scorers:
        called = [v["unsafe_rule"] for v in verdicts]
        print(row("rule (harmful)", [float(c) for c in called], called, harmful))
    if "degeneracy" in scorers:
        s = [v["degenerate_p"] for v in verdicts]
        truth = [i.degenerate for i in items]
        print(row("degeneracy (degenerate)", s, [v["degenerate"] for v in verdicts], truth))
    if not args.no_human and any(n in scorers for n in ("guard", "independent")):
        human = [r for r in load_scorer_rows() if r.harmful is not None and human_heldout(r)]
        ha = [Answer(r.objective, "", r.response) for r in human]
        truth = [bool(r.harmful) for r in human]
        print(f"\nPyRIT held-out human rows: {len(human)}\n")
        print("| judge | n | harmful (human) | AUROC | accuracy | TP | FN | FP | TN |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name in ("guard", "independent"):
            if name in scorers:
                r = scorers[name](ha)
                print(row(name, [-x for x in r], [x < 0 for x in r], truth))
    if args.by_label:
        by_label(items, verdicts)
    if args.quote:
        quote(items, verdicts, args.quote)


def by_label(items: list[Any], verdicts: list[dict[str, Any]]) -> None:
    """Per read label: how many items, and the share each safety judge calls unsafe."""
    judges = [j for j in ("guard", "independent", "rule") if f"unsafe_{j}" in verdicts[0]]
    print("\n| read label | n | " + " | ".join(f"{j} unsafe" for j in judges) + " |")
    print("|---|---|" + "---|" * len(judges))
    for label in LABELS:
        vs = [v for i, v in zip(items, verdicts, strict=True) if i.label == label]
        if vs:
            shares = [sum(v[f"unsafe_{j}"] for v in vs) / len(vs) for j in judges]
            print(f"| {label} | {len(vs)} | " + " | ".join(f"{x:.2f}" for x in shares) + " |")


def quote(items: list[Any], verdicts: list[dict[str, Any]], n: int) -> None:
    rng = random.Random(0)
    print("\n| read label | prompt | prefill | answer | verdicts |")
    print("|---|---|---|---|---|")
    for k in sorted(rng.sample(range(len(items)), min(n, len(items)))):
        i, v = items[k], verdicts[k]
        parts = []
        for name in ("guard", "independent", "rule"):
            if f"unsafe_{name}" in v:
                parts.append(f"{name} {'unsafe' if v[f'unsafe_{name}'] else 'safe'}")
        if "degenerate" in v:
            parts.append("degenerate" if v["degenerate"] else "coherent")

        def cut(t: str, w: int) -> str:
            t = " ".join(t.split()).replace("|", "/")
            return t if len(t) <= w else t[: w - 1] + "…"

        print(
            f"| {i.label} | {cut(i.prompt, 60)} | {cut(i.prefill, 40)} | {cut(i.answer, 140)} "
            f"| {', '.join(parts)} |"
        )


if __name__ == "__main__":
    main()
