"""The judges' gold set: draw answers to read, hand them to readers, assemble the labels.

``pool``: draw a batch of (prompt, prefill, answer) items, stratified by source cell, without
any judge's verdict, and split them into reader files. Sources:

* ``aligned-world``: ``results/gold/aligned-v1/answers.jsonl`` (``bench/aligned.py``: the base,
  ``smol-aligned`` and ``smol-aligned-deep``; no attack, a 10-token harmful prefill, benign);
* ``embedded``: ``results/embedded/records.jsonl`` (every search method on the *unaligned*
  world; Saffron at N = 16 there is mostly broken text — the degenerate class);
* any ``saffron eval`` output folder given with ``--run NAME=DIR`` (e.g. the search methods
  on the aligned world).

Harmful items are drawn from a fixed set of *gold prompts* (``--gold-prompts``, seeded), so
that the same prompt is seen answered in several ways (refusal, recovery, compliance, noise)
and the gold set uses as few held-out prompts as it can.

Writes ``OUT/items-<reader>.jsonl`` ({"id", "prompt", "prefill", "answer"}), one file per
reader with the batch shared out, plus ``items-overlap.jsonl`` (``--overlap`` of the batch, for
a second reader), and ``key.jsonl`` linking each id to its source record.

``assemble``: every batch folder's key and labels (``labels-<reader>.jsonl``; the overlap's
disagreements settled in ``settled.jsonl`` when present) → ``src/saffron/data/sets/gold.json``
with a train / validation / test split by prompt (see :mod:`saffron.judge.gold`), and the
agreement (Cohen's kappa) on the overlap.

Usage::

    python bench/gold.py pool --out results/gold/batch1
    python bench/gold.py assemble results/gold/aligned-v1/reading results/gold/batch1 ...
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from reading import LABELS, kappa, read_jsonl, write_jsonl

from saffron.data import load_prompts
from saffron.data.prompts import rows_of_split

ALIGNED = Path("results/gold/aligned-v1")  # the first smol-aligned's bench/aligned.py run
EMBEDDED = Path("results/embedded")
HARMFUL_SETS = ("advbench", "harmbench", "strongreject")


def gold_prompts(n: int, seed: int) -> set[str]:
    """``n`` harmful prompt ids among those that both result folders answered (seeded)."""
    recs = read_jsonl(ALIGNED / "answers.jsonl")
    ids = sorted({r["prompt_id"] for r in recs if r["condition"] != "benign"})
    emb = {r["prompt_id"] for r in read_jsonl(EMBEDDED / "records.jsonl")}
    rng = random.Random(seed)
    # the embedded run covers AdvBench only: keep its prompts in proportion
    return set(rng.sample(ids, min(n, len(ids)))) | set(rng.sample(sorted(emb), n // 3))


def _already_read() -> set[tuple[str, str, str]]:
    key = ALIGNED / "reading" / "key.jsonl"
    return {(r["policy"], r["condition"], r["prompt_id"]) for r in read_jsonl(key)}


def _held_out_ids() -> set[str]:
    """Ids of every harmful prompt in an eval split."""
    return {r.id for name in HARMFUL_SETS for r in rows_of_split(name, "eval")}


def _prompt_text() -> dict[str, str]:
    return {r.id: r.prompt for name in HARMFUL_SETS for r in load_prompts(name)}


def aligned_items(
    gold: set[str],
    per_cell: int,
    rng: random.Random,
    path: Path = ALIGNED / "answers.jsonl",
    source: str = "aligned-world",
    benign_per_cell: int | None = None,
) -> list[dict[str, Any]]:
    """Items from a ``bench/aligned.py`` answers file: ``per_cell`` per (policy, condition)
    (``benign_per_cell`` for the benign cells), harmful ones from the gold prompts only."""
    seen = _already_read() if path == ALIGNED / "answers.jsonl" else set()
    held = _held_out_ids()
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in read_jsonl(path):
        if (r["policy"], r["condition"], r["prompt_id"]) in seen:
            continue
        # the gold-prompt limit keeps held-out prompts out of the judges' training data; a
        # training prompt (bench/aligned.py --harmful-split unused-train) needs no limit
        if r["condition"] != "benign" and r["prompt_id"] not in gold and r["prompt_id"] in held:
            continue
        cells.setdefault((r["policy"], r["condition"]), []).append(r)
    out = []
    for (pol, cond), rs in sorted(cells.items()):
        k = benign_per_cell if cond == "benign" and benign_per_cell is not None else per_cell
        for r in rng.sample(rs, min(k, len(rs))):
            src = {"source": source, "policy": pol, "condition": cond}
            out.append({**src, **_item(r["prompt_id"], r["prompt"], r["prefill"], r["text"])})
    return out


def run_items(
    folder: Path,
    name: str,
    gold: set[str],
    weights: dict[str, int],
    per_cell: int,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """Items from a ``saffron eval`` folder: ``per_cell`` per (method, budget), times
    ``weights[method@budget]`` where given."""
    text = _prompt_text()
    cfg = json.loads((folder / "config.json").read_text())
    cells: dict[str, list[dict[str, Any]]] = {}
    for r in read_jsonl(folder / "records.jsonl"):
        if r["prompt_id"] in gold and r["prompt_id"] in text:
            cells.setdefault(f"{r['method']}@{r['budget']}", []).append(r)
    out = []
    for cell, rs in sorted(cells.items()):
        k = per_cell * weights.get(cell, 1)
        for r in rng.sample(rs, min(k, len(rs))):
            src = {"source": name, "policy": cfg.get("policy", ""), "condition": cell}
            pid = r["prompt_id"]
            out.append({**src, **_item(pid, text[pid], r.get("prefill") or "", r["text"])})
    return out


def _item(prompt_id: str, prompt: str, prefill: str, answer: str) -> dict[str, Any]:
    return {"prompt_id": prompt_id, "prompt": prompt, "prefill": prefill, "answer": answer}


def pool(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    gold = gold_prompts(args.gold_prompts, args.seed)
    items: list[dict[str, Any]] = []
    if args.aligned_per_cell:
        items += aligned_items(gold, args.aligned_per_cell, rng)
    for spec in args.answers:
        name, path = spec.split("=", 1)
        items += aligned_items(
            gold, args.answers_per_cell, rng, Path(path), name, args.benign_per_cell
        )
    weights = {k: int(v) for k, v in (w.split("=") for w in args.weight)}
    runs = [("embedded", EMBEDDED)] if args.embedded_per_cell else []
    runs += [(n, Path(d)) for n, d in (r.split("=", 1) for r in args.run)]
    for name, folder in runs:
        per = args.embedded_per_cell if name == "embedded" else args.run_per_cell
        items += run_items(folder, name, gold, weights, per, rng)
    rng.shuffle(items)  # readers see no order by source
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    prefix = args.prefix
    key = [{"id": f"{prefix}{i:04d}", **it} for i, it in enumerate(items, start=1)]
    shown = [{k: r[k] for k in ("id", "prompt", "prefill", "answer")} for r in key]
    readers = args.readers.split(",")
    for j, reader in enumerate(readers):
        write_jsonl(out / f"items-{reader}.jsonl", shown[j :: len(readers)])
    overlap = rng.sample(shown, min(args.overlap, len(shown)))
    write_jsonl(out / "items-overlap.jsonl", sorted(overlap, key=lambda r: r["id"]))
    write_jsonl(out / "key.jsonl", key)
    print(
        f"{len(key)} items in {out}: "
        + ", ".join(f"{c}={n}" for c, n in sorted(Counter(r["source"] for r in key).items()))
    )


def assemble(args: argparse.Namespace) -> None:
    from saffron.data.gold import GoldItem, split_of, write_gold

    items: list[GoldItem] = []
    pairs: list[tuple[str, str]] = []
    for folder in args.folders:
        key = {r["id"]: r for r in read_jsonl(folder / "key.jsonl")}
        first = {}
        for p in sorted(folder.glob("labels-*.jsonl")):
            if p.stem == "labels-overlap":
                continue
            first.update({r["id"]: r for r in read_jsonl(p)})
        settled = folder / "settled.jsonl"
        final = dict(first)
        if settled.is_file():
            final.update({r["id"]: r for r in read_jsonl(settled)})
        over = folder / "labels-overlap.jsonl"
        if over.is_file():
            pairs += [(first[r["id"]]["label"], r["label"]) for r in read_jsonl(over)]
        missing = sorted(set(key) - set(final))
        if missing:
            raise SystemExit(f"{folder}: {len(missing)} items have no label, e.g. {missing[:3]}")
        for iid, k in key.items():
            lab = final[iid]
            if lab["label"] not in LABELS:
                raise SystemExit(f"{folder}: {iid} has unknown label {lab['label']!r}")
            items.append(
                GoldItem(
                    id=iid,
                    prompt_id=k["prompt_id"],
                    prompt=k["prompt"],
                    prefill=k["prefill"],
                    answer=k.get("answer", k.get("text", "")),
                    label=lab["label"],
                    note=lab.get("note", ""),
                    source=f"{k.get('source', 'aligned-world')}:{k['policy']}:{k['condition']}",
                    split=split_of(k["prompt_id"]),
                )
            )
    if pairs:
        a, b = zip(*pairs, strict=True)
        agree = sum(x == y for x, y in pairs)
        print(
            f"overlap: {len(pairs)} items, agreement {agree}, kappa {kappa(list(a), list(b)):.3f}"
        )
    write_gold(items, args.dest)
    c = Counter((i.split, i.label) for i in items)
    print(f"{len(items)} items → {args.dest}")
    for split in ("train", "validation", "test"):
        print(split, {lab: c[(split, lab)] for lab in LABELS})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pool")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--prefix", default="g", help="item id prefix (one per batch)")
    p.add_argument("--gold-prompts", type=int, default=120)
    p.add_argument("--aligned-per-cell", type=int, default=20)
    p.add_argument("--embedded-per-cell", type=int, default=8)
    p.add_argument("--run", action="append", default=[], help="NAME=DIR of a saffron eval run")
    p.add_argument("--run-per-cell", type=int, default=10)
    p.add_argument(
        "--answers",
        action="append",
        default=[],
        help="NAME=PATH of a bench/aligned.py answers file",
    )
    p.add_argument("--answers-per-cell", type=int, default=10)
    p.add_argument("--benign-per-cell", type=int, default=None)
    p.add_argument("--weight", action="append", default=[], help="METHOD@BUDGET=k: k× per cell")
    p.add_argument("--readers", default="A,C,D")
    p.add_argument("--overlap", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("assemble")
    a.add_argument("folders", type=Path, nargs="+")
    a.add_argument("--dest", type=Path, default=Path("src/saffron/data/sets/gold.json"))
    args = ap.parse_args()
    pool(args) if args.cmd == "pool" else assemble(args)


if __name__ == "__main__":
    main()
