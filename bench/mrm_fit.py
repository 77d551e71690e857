"""How well the MRM predicts the guard's process reward on held-out prompts (paper Fig. 4b).

For every held-out item of the label dataset (the MRM's ``meta.json`` records the split) and
every response position j, compare the MRM's estimate made before token j is seen,
``M(s[0:j])[s_j]`` (:meth:`saffron.reward.mrm.MRM.next_token_rewards`, raw: no unseen mask),
with the guard's reward r_j of the prefix ending at s_j. Reports MSE, R² (1 − SSE/SST), the
fraction of predictions within ±1 of the guard, and the share of positions whose token the
MRM never saw in training (those would be −∞ in a search). A sample of training items is scored
too, to show the gap between fit and generalisation.

Held-out items are reported twice more, split by kind: corpus responses (sampled from the
policy) and search-visited states (the final pools of ``saffron visit``), because a search
queries the MRM on the latter. ``--fresh DIR`` scores a label folder the MRM never trained on,
such as the states a search guided by *this* MRM reached: the distribution it is queried on.

Usage::

    python bench/mrm_fit.py [--mrm smol-mrm] [--labels DIR[,DIR...]] [--fresh DIR]
                            [--train-sample 200] [--max-items N]
                            [--png bench/results/mrm_fit.png]

Prints a markdown table and writes the scatter plot (guard reward vs MRM prediction).
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from saffron.errors import SaffronError
from saffron.paths import cache_dir
from saffron.reward.mrm import MRM
from saffron.reward.mrm_load import load_mrm
from saffron.train.label import LabelledItem, read_label_sets, read_labels
from saffron.train.mrm_train import split
from saffron.train.visited import VISITED

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Fit:
    name: str
    items: int
    tokens: int
    mse: float
    r2: float
    within1: float
    unseen: float

    def row(self) -> str:
        return (
            f"| {self.name} | {self.items} | {self.tokens} | {self.mse:.3f} | {self.r2:.3f} | "
            f"{self.within1:.3f} | {self.unseen:.3f} |"
        )


def predict(
    mrm: MRM, items: list[LabelledItem], batch: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(guard rewards, MRM predictions, unseen flags), flat over every response position."""
    ys, ps, us = [], [], []
    for i in range(0, len(items), batch):
        part = items[i : i + batch]
        preds = mrm.next_token_rewards([it.sequence() for it in part])
        mrm.backend.clear()
        for it, p in zip(part, preds, strict=True):
            ys.append(it.rewards)
            ps.append(p.numpy())
            us.append(mrm.unseen.cpu()[torch.tensor(it.response)].numpy())
    return np.concatenate(ys), np.concatenate(ps), np.concatenate(us)


def fit(name: str, n_items: int, y: np.ndarray, p: np.ndarray, unseen: np.ndarray) -> Fit:
    err = p - y
    sst = float(((y - y.mean()) ** 2).sum())
    return Fit(
        name=name,
        items=n_items,
        tokens=len(y),
        mse=float((err**2).mean()),
        r2=1.0 - float((err**2).sum()) / sst if sst > 0 else float("nan"),
        within1=float((np.abs(err) <= 1.0).mean()),
        unseen=float(unseen.mean()),
    )


def scatter(y: np.ndarray, p: np.ndarray, title: str, path: Path) -> None:
    lo = float(min(y.min(), p.min(), -10.0))
    hi = float(max(y.max(), p.max(), 10.0))
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(y, p, s=3, alpha=0.25, linewidths=0)
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
    ax.fill_between([lo, hi], [lo - 1, hi - 1], [lo + 1, hi + 1], color="grey", alpha=0.2)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="guard reward (PRM)", ylabel="MRM prediction")
    ax.set_title(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mrm", default="smol-mrm", help="MRM name or folder (saffron train-mrm)")
    ap.add_argument(
        "--labels", default=None, help="label folder(s), comma-separated (default: the MRM's own)"
    )
    ap.add_argument(
        "--fresh", default=None, help="a label folder the MRM never trained on, scored whole"
    )
    ap.add_argument("--train-sample", type=int, default=200, help="training items to score")
    ap.add_argument("--max-items", type=int, default=None, help="cap on held-out items")
    ap.add_argument("--png", default=str(RESULTS / "mrm_fit.png"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    t0 = time.perf_counter()
    mrm = load_mrm(args.mrm)
    # the MRM's meta names its label folder inside the user cache (never a machine path)
    folders = (
        [Path(f).expanduser() for f in args.labels.split(",")]
        if args.labels
        else [cache_dir() / "labels" / str(mrm.meta.get("labels", ""))]
    )
    labels = ",".join(str(f) for f in folders)
    meta, items = read_label_sets(folders)
    if meta.get("policy_vocab_hash") != mrm.meta.get("policy_vocab_hash"):
        raise SaffronError(f"the labels in {labels} are for another tokenizer than {args.mrm}")
    split_info = mrm.meta.get("split")
    holdout = float(split_info.get("holdout", 0.1)) if isinstance(split_info, dict) else 0.1
    train, held = split(items, holdout)
    held = held[: args.max_items] if args.max_items else held
    sample = random.Random(0).sample(train, min(args.train_sample, len(train)))
    parts = [("held-out", held), ("train sample", sample)]
    if any(it.kind == VISITED for it in held):
        parts[1:1] = [
            ("held-out, corpus responses", [it for it in held if it.kind != VISITED]),
            ("held-out, search-visited", [it for it in held if it.kind == VISITED]),
        ]
    if args.fresh:
        fresh_meta, fresh = read_labels(Path(args.fresh).expanduser())
        if fresh_meta.get("guard_weights") != meta.get("guard_weights"):
            raise SaffronError(f"the labels in {args.fresh} are by another guard than {labels}")
        parts.append((f"never trained on: {Path(args.fresh).name}", fresh))
    rows, y_held, p_held = [], np.zeros(0), np.zeros(0)
    for name, part in parts:
        if not part:
            continue
        y, p, unseen = predict(mrm, part)
        rows.append(fit(name, len(part), y, p, unseen))
        if name == "held-out":
            y_held, p_held = y, p
            if (~unseen).any() and unseen.any():
                rows.append(
                    fit("held-out, seen tokens", len(part), y[~unseen], p[~unseen], unseen[~unseen])
                )
    print(f"MRM {args.mrm} on {labels} (holdout {holdout}), {time.perf_counter() - t0:.0f} s\n")
    print("| split | items | tokens | MSE | R² | within ±1 | unseen |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(r.row())
    if len(y_held):
        held_fit = rows[0]
        title = (
            f"{args.mrm}: held-out, {held_fit.tokens} tokens — R² {held_fit.r2:.2f}, "
            f"{100 * held_fit.within1:.0f}% within ±1"
        )
        scatter(y_held, p_held, title, Path(args.png))
        print(f"\nscatter plot: {args.png}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SaffronError as err:
        print(f"mrm_fit: error: {err}")
        raise SystemExit(2) from None
