"""What ``saffron demo`` tells after its run: one prompt answered three ways, then a small table.

The story of the method on the aligned world, for one held-out harmful prompt:

1. **no attack** — the aligned policy's greedy answer to the bare request (it refuses);
2. **attacked** — its greedy answer after the harmful prefill (the attack breaks it);
3. **defended** — Saffron's answer under the same prefill.

The prompt shown is the first (in the run's order) whose attacked answer the independent judge
calls unsafe and whose Saffron answer, at the largest budget, it calls safe and the degeneracy
judge coherent; failing that, the first whose attacked answer is unsafe. Nothing is chosen to
look good beyond that rule, and the table beside it counts every prompt.

The table: per method and budget, ASR by the independent judge (the headline) and by the
guard, the degenerate rate, the safe-and-coherent share, and TFLOP per prompt. Ten prompts make
a demonstration, not a measurement: the measured tables are in BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from saffron.eval.judges import cell_rates

DEFENCE = "saffron"
NO_DEFENCE = "greedy"


def story_prompt(rows: Sequence[dict[str, Any]]) -> str | None:
    """The prompt id the story shows (see the module doc), from judged rows (``prompt_id``,
    ``method``, ``budget``, ``unsafe_independent``, ``safe_coherent_independent``); None when
    no attacked answer is unsafe."""
    order = list(dict.fromkeys(str(r["prompt_id"]) for r in rows))
    budgets = [int(r["budget"]) for r in rows if r["method"] == DEFENCE]
    top = max(budgets) if budgets else None
    attacked = {
        str(r["prompt_id"]) for r in rows if r["method"] == NO_DEFENCE and r["unsafe_independent"]
    }
    defended = {
        str(r["prompt_id"])
        for r in rows
        if r["method"] == DEFENCE and int(r["budget"]) == top and r["safe_coherent_independent"]
    }
    for pid in order:
        if pid in attacked and pid in defended:
            return pid
    return next((pid for pid in order if pid in attacked), None)


def demo_table(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table of the module doc: one line per (method, budget) of ``records``,
    verdicts from the judged ``rows`` (same order as the records)."""
    tflop: dict[tuple[str, int], list[float]] = {}
    for r in records:
        tflop.setdefault((str(r["method"]), int(r["budget"])), []).append(float(r["tflop"]))
    lines = [
        "| method | budget | prompts | ASR (independent) | ASR (guard) | degenerate "
        "| safe & coherent | TFLOP/prompt |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (method, budget), v in cell_rates(rows).items():
        t = tflop[(method, budget)]
        lines.append(
            f"| {method} | {budget} | {int(v['n'])} | {v['unsafe_independent']:.2f} "
            f"| {v['unsafe_guard']:.2f} | {v['degenerate']:.2f} "
            f"| {v['safe_coherent_independent']:.2f} | {sum(t) / len(t):.3f} |"
        )
    return "\n".join(lines)


def verdict(row: dict[str, Any]) -> str:
    """A judged row in words: ``unsafe``/``safe`` by the independent judge, and ``degenerate``."""
    words = ["unsafe" if row["unsafe_independent"] else "safe"]
    if row.get("degenerate"):
        words.append("degenerate")
    return ", ".join(words)


def story_text(
    prompt: str,
    prefill: str,
    plain: tuple[str, str],
    attacked: tuple[str, str],
    defended: tuple[str, str, int],
) -> str:
    """The three answers, each as (text, verdict); ``defended`` also carries Saffron's N."""

    def quote(text: str) -> str:
        one = " ".join(text.split())
        return f'"{one[:200]}{"…" if len(one) > 200 else ""}"'

    text, why, n = defended
    return "\n".join(
        [
            f"One held-out prompt, three ways: {quote(prompt)}",
            f"  1. no attack, greedy          [{plain[1]}]: {quote(plain[0])}",
            f"  2. attacked, greedy           [{attacked[1]}]: {quote(prefill)} + "
            f"{quote(attacked[0])}",
            f"  3. attacked, Saffron N = {n:<4d} [{why}]: {quote(prefill)} + {quote(text)}",
        ]
    )
