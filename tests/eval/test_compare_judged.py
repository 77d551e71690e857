"""``saffron compare`` with a judged run: the independent judge is the headline ASR, the guard,
the degenerate rate and safe & coherent beside it; a judged.jsonl that does not cover the
records is not used, and the report says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from saffron.errors import SaffronError
from saffron.eval.compare import cells, load_judged, report, wilson


def records() -> list[dict[str, Any]]:
    out = []
    for i in range(4):
        for method, budget, tflop in (("best-of-n", 4, 1.0), ("saffron", 4, 1.0)):
            out.append(
                {
                    "prompt_id": f"p{i}",
                    "method": method,
                    "budget": budget,
                    "tflop": tflop,
                    "unsafe": True,  # the guard calls everything unsafe
                    "unsafe_refusal_rule": False,
                    "judge_reward": -1.0,
                    "tokens": [1],
                    "wall_s": 0.1,
                }
            )
    return out


def verdicts(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Independent judge: best-of-n unsafe on p0 only; saffron safe everywhere, but p1 and p2
    are degenerate."""
    out = []
    for r in recs:
        unsafe = r["method"] == "best-of-n" and r["prompt_id"] == "p0"
        degenerate = r["method"] == "saffron" and r["prompt_id"] in ("p1", "p2")
        out.append(
            {
                "prompt_id": r["prompt_id"],
                "method": r["method"],
                "budget": r["budget"],
                "unsafe_independent": unsafe,
                "unsafe_guard": True,
                "degenerate": degenerate,
                "safe_coherent_independent": not unsafe and not degenerate,
            }
        )
    return out


def write_judged(out: Path, rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "judged.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))


def test_independent_judge_is_the_headline(tmp_path: Path) -> None:
    recs = records()
    write_judged(tmp_path, verdicts(recs))
    judged = load_judged(tmp_path, recs)
    assert judged is not None and [j["prompt_id"] for j in judged] == [r["prompt_id"] for r in recs]
    bon, saf = cells(recs, judged)
    assert (bon.judge, bon.asr, bon.asr_guard, bon.degenerate, bon.safe_coherent) == (
        "independent",
        0.25,
        1.0,
        0.0,
        0.75,
    )
    assert (saf.asr, saf.degenerate, saf.safe_coherent) == (0.0, 0.5, 0.5)
    text = report(recs, tmp_path)
    assert "| method | budget | n | ASR (independent) | 95% CI | ASR (guard) | degenerate" in text
    assert "| saffron | 4 | 4 | 0.000 | [0.00, 0.49] | 1.000 | 0.500 | 0.500 |" in text
    assert json.loads((tmp_path / "metrics.json").read_text())["cells"][1]["judge"] == "independent"


def test_without_or_with_a_stale_judged_file_the_guard_is_the_headline(tmp_path: Path) -> None:
    recs = records()
    (bon, _) = cells(recs)
    assert (bon.judge, bon.asr, bon.asr_guard, bon.degenerate) == ("guard", 1.0, None, None)
    (tmp_path / "plain").mkdir()
    assert "| ASR (guard) | 95% CI | ASR (refusal rule)" in report(recs, tmp_path / "plain")
    write_judged(tmp_path / "stale", verdicts(recs[:-2]))  # the run grew after judging
    assert load_judged(tmp_path / "stale", recs) is None
    text = report(recs, tmp_path / "stale")
    assert "judged.jsonl does not cover these records" in text and "ASR (independent)" not in text
    with pytest.raises(SaffronError, match="7 verdicts for 8 records"):
        cells(recs, verdicts(recs)[:-1])


def write_benign(out: Path, attack: str = "none") -> list[dict[str, Any]]:
    """A benign run: greedy refuses p0; saffron refuses p0 and p1, and breaks p3."""
    recs = []
    for r in records():
        refuses = r["prompt_id"] == "p0" or (r["method"] == "saffron" and r["prompt_id"] == "p1")
        text = "I can't help with that." if refuses else "Bread needs flour, water and salt."
        recs.append({**r, "method": r["method"].replace("best-of-n", "greedy"), "text": text})
    out.mkdir(parents=True)
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (out / "config.json").write_text(json.dumps({"attack": attack}))
    verdict = [
        {
            **v,
            "method": r["method"],
            "degenerate": r["method"] == "saffron" and r["prompt_id"] == "p3",
        }
        for r, v in zip(recs, verdicts(records()), strict=True)
    ]
    write_judged(out, verdict)
    return recs


def test_benign_run_adds_over_refusal(tmp_path: Path) -> None:
    recs = records()
    for r in recs:
        r["method"] = r["method"].replace("best-of-n", "greedy")
    benign = tmp_path / "benign"
    write_benign(benign)
    (tmp_path / "attacked").mkdir()
    text = report(recs, tmp_path / "attacked", reference="greedy", benign=benign)
    assert "| ASR (refusal rule) |" in text and "| over-refusal (benign) |" in text
    assert "| greedy | 4 | 4 | 1.000 | [0.51, 1.00] | 0.250 | 0.000 |" in text
    assert "| saffron | 4 | 4 | 1.000 | [0.51, 1.00] | 0.500 | 0.000 |" in text
    # the benign table; budget 4 is not the baseline's budget 1: no difference to show
    low, high = wilson(2, 4)
    assert f"| saffron | 4 | 4 | 0.500 | [{low:.2f}, {high:.2f}] | — | 0.250 | 1.0000 |" in text
    metrics = json.loads((tmp_path / "attacked" / "metrics.json").read_text())
    assert [(b["method"], b["refusal"], b["degenerate"]) for b in metrics["benign"]] == [
        ("greedy", 0.25, 0.0),
        ("saffron", 0.5, 0.25),
    ]


def test_benign_run_must_have_no_attack(tmp_path: Path) -> None:
    write_benign(tmp_path / "benign", attack="prefill:10")
    (tmp_path / "attacked").mkdir()
    with pytest.raises(SaffronError, match=r"was run under --attack prefill:10; over-refusal"):
        report(records(), tmp_path / "attacked", benign=tmp_path / "benign")
    with pytest.raises(SaffronError, match=r"nowhere: no such directory"):
        report(records(), tmp_path / "attacked", benign=tmp_path / "nowhere")


def test_compute_to_reach_an_asr() -> None:
    import math

    from saffron.eval.compare import tflop_to_reach

    points = [(1.0, 0.8), (4.0, 0.4), (16.0, 0.2)]
    assert tflop_to_reach(points, 0.9) == 1.0  # reached at the first point
    assert tflop_to_reach(points, 0.4) == 4.0
    # half-way from 0.4 to 0.2 in ASR is half-way from 4 to 16 in log TFLOP: 8
    assert math.isclose(tflop_to_reach(points, 0.3) or 0.0, 8.0)
    assert tflop_to_reach(points, 0.1) is None  # never that low
    assert tflop_to_reach([], 0.5) is None


def test_report_gives_the_compute_to_reach_the_reference(tmp_path: Path) -> None:
    recs = []
    for i in range(4):
        for method, budget, tflop, unsafe in (
            ("best-of-n", 1, 1.0, i < 3),
            ("best-of-n", 4, 4.0, i < 2),
            ("saffron", 1, 1.0, i < 2),
            ("saffron", 4, 4.0, i < 1),
        ):
            recs.append(
                {
                    "prompt_id": f"p{i}",
                    "method": method,
                    "budget": budget,
                    "tflop": tflop,
                    "unsafe": unsafe,
                    "unsafe_refusal_rule": False,
                    "judge_reward": 0.0,
                    "tokens": [1],
                    "wall_s": 0.1,
                    "finished": i == 0,
                }
            )
    assert {c.at_cap for c in cells(recs)} == {0.75}  # three of four answers hit the cap
    text = report(recs, tmp_path)
    assert "## Compute to reach best-of-n's ASR (0.500 at 4.0000 TFLOP)" in text
    assert "| saffron | 1.0000 | 0.25 |" in text and "| best-of-n | 4.0000 | 1.00 |" in text
    reach = json.loads((tmp_path / "metrics.json").read_text())["matched"]["reach"]
    assert reach == [
        {"method": "best-of-n", "share": 1.0, "tflop": 4.0},
        {"method": "saffron", "share": 0.25, "tflop": 1.0},
    ]
