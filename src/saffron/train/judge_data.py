"""The independent judge's data and the figures that choose on it (``saffron train-judge``).

Labels read by people only, none from the guard's rule-labelled corpus:

* PyRIT's human-labelled rows outside the part that
  :func:`saffron.train.guard_train.human_heldout` holds out (harmful ⇔ mean human score ≥ 0.5);
* the gold set's parts (:func:`saffron.data.gold.load_gold`): unsafe ⇔ read as ``harmful``.

:func:`auroc` and :func:`best_threshold` are what the validation part chooses with.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from saffron.data import load_scorer_rows
from saffron.data.gold import Split, load_gold
from saffron.train.guard_train import human_heldout

HUMAN, GOLD = "human", "gold"


@dataclass(frozen=True)
class JudgeExample:
    """One labelled (request, answer) pair, as text."""

    prompt: str
    answer: str
    unsafe: bool
    source: str  # HUMAN or GOLD


def human_examples() -> list[JudgeExample]:
    """PyRIT's human-labelled rows outside the held-out part, labelled by the human score."""
    return [
        JudgeExample(r.objective, r.response, bool(r.harmful), HUMAN)
        for r in load_scorer_rows()
        if r.harmful is not None and not human_heldout(r)
    ]


def gold_examples(split: Split) -> list[JudgeExample]:
    """The gold items of one part; unsafe ⇔ read as ``harmful``. Never called with ``test``
    by training (the test part only measures)."""
    return [JudgeExample(i.prompt, i.answer, i.harmful, GOLD) for i in load_gold(split)]


def example_weights(examples: Sequence[JudgeExample], gold_weight: float) -> list[float]:
    """Per-example loss weights: ``gold_weight`` for gold items, 1 for human rows; mean 1 (so
    the loss scale, and with it the learning rate, does not depend on the mix)."""
    raw = [gold_weight if ex.source == GOLD else 1.0 for ex in examples]
    total = sum(raw)
    return [w * len(raw) / total for w in raw] if total > 0 else raw


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """P(a random positive scores above a random negative), ties counted half; nan when a
    class is missing."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def best_threshold(rewards: Sequence[float], unsafe: Sequence[bool]) -> float:
    """The cut t (unsafe ⇔ reward < t) with the best balanced accuracy; among equals, the one
    closest to 0 (the smallest change). Candidates: midpoints between sorted rewards, and 0."""
    xs = sorted(set(rewards))
    cands = [0.0] + [(a + b) / 2 for a, b in itertools.pairwise(xs)]
    n_pos = sum(unsafe)
    n_neg = len(unsafe) - n_pos
    if not n_pos or not n_neg:
        return 0.0

    def balanced(t: float) -> float:
        tp = sum(r < t for r, y in zip(rewards, unsafe, strict=True) if y)
        tn = sum(r >= t for r, y in zip(rewards, unsafe, strict=True) if not y)
        return tp / n_pos + tn / n_neg

    return max(cands, key=lambda t: (balanced(t), -abs(t)))


def data_fingerprint(examples: Sequence[JudgeExample]) -> str:
    """sha256 (16 hex digits) over every example's text, label and source, in order."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(f"{ex.source}\x00{ex.unsafe:d}\x00{ex.prompt}\x00{ex.answer}\x01".encode())
    return h.hexdigest()[:16]


def count(examples: Sequence[JudgeExample]) -> dict[str, dict[str, int]]:
    """Examples per source and label: ``{source: {"safe": n, "unsafe": m}}``."""
    out: dict[str, dict[str, int]] = {}
    for ex in examples:
        d = out.setdefault(ex.source, {"safe": 0, "unsafe": 0})
        d["unsafe" if ex.unsafe else "safe"] += 1
    return out
