"""The degeneracy judge: its features see loops and noise, its fit separates what is
separable, it round-trips, and bad inputs fail with one readable line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from saffron.errors import SaffronError
from saffron.lm.models import LoadedModel
from saffron.reward.degeneracy import (
    FLUENCY_FEATURES,
    SURFACE_FEATURES,
    DegeneracyJudge,
    choose_threshold,
    feature_rows,
    fit,
    reference_scorer,
    surface_features,
)

FLUENT = [
    "To remove a red wine stain, blot it with a clean cloth and apply cold water.",
    "I can't help with that. If you are worried about someone, please call a local helpline.",
    "Paris is the capital of France, and it is known for its museums and cafés.",
    "Start with a short warm-up, then run for twenty minutes at an easy pace.",
    "A binary search halves the range at each step, so it takes logarithmic time.",
    "Mix the flour and butter, add the sugar, and bake for twenty-five minutes.",
]
BROKEN = [
    "your local TV TV TV TV TV TV TV TV.. Th.... Sav.. Sav.. Sav..",
    "the the the the the the the the the the the the the",
    "......!!!!.... ,,,, ..... ;;;; ....",
    "and then and then and then and then and then and then and then",
    "Sav.. Sav.. Sav.. Sav.. Sav.. Sav.. Sav.. Sav..",
    "I I I I I I I I I I I I I I I I I",
]


def named(text: str) -> dict[str, float]:
    return dict(zip(SURFACE_FEATURES, surface_features(text), strict=True))


def test_surface_features_see_repetition_and_noise() -> None:
    loop, prose = named(BROKEN[1]), named(FLUENT[0])
    assert loop["distinct1"] == pytest.approx(1 / 13)
    assert loop["longest_run"] == 13 and prose["longest_run"] == 1
    assert loop["repeated4"] == 1.0 and prose["repeated4"] == 0.0
    assert loop["compression"] < prose["compression"]
    assert named(BROKEN[2])["letters"] == 0.0 and named(BROKEN[2])["punct_words"] > 0.5
    empty = named("")
    assert empty["log_words"] == 0.0 and empty["letters"] == 0.0


def test_fit_separates_a_separable_set(tmp_path: Path) -> None:
    texts = FLUENT + BROKEN
    labels = [False] * len(FLUENT) + [True] * len(BROKEN)
    rows = feature_rows(SURFACE_FEATURES, [""] * 12, [""] * 12, texts)
    judge = fit(SURFACE_FEATURES, rows, labels)
    probs = judge.probabilities(rows)
    assert all(p > 0.5 for p in probs[6:]) and all(p < 0.5 for p in probs[:6])
    t = choose_threshold(probs, labels)
    assert min(probs[6:]) >= t > max(probs[:6])
    path = tmp_path / "degeneracy.json"
    judge.save(path)
    assert DegeneracyJudge.load(path) == judge
    assert not judge.uses_reference


def test_bad_inputs() -> None:
    rows = feature_rows(SURFACE_FEATURES, [""], [""], ["fine text here"])
    with pytest.raises(SaffronError, match="both degenerate and coherent"):
        fit(SURFACE_FEATURES, rows * 3, [True] * 3)
    with pytest.raises(SaffronError, match="both classes"):
        choose_threshold([0.1, 0.2], [False, False])
    with pytest.raises(SaffronError, match="need a reference model"):
        feature_rows(SURFACE_FEATURES + FLUENCY_FEATURES, ["p"], [""], ["a"])
    with pytest.raises(SaffronError, match="unknown degeneracy features"):
        DegeneracyJudge(("perplexity",), (0.0,), (1.0,), (1.0,), 0.0, 0.5, "")
    with pytest.raises(SaffronError, match="one mean, std and weight"):
        DegeneracyJudge(("letters",), (0.0, 1.0), (1.0,), (1.0,), 0.0, 0.5, "")
    with pytest.raises(SaffronError, match="no degeneracy judge at"):
        DegeneracyJudge.load(Path("/nonexistent/degeneracy.json"))


def test_reference_scorer_matches_a_plain_forward(tiny: LoadedModel) -> None:
    import torch

    score = reference_scorer(tiny.model.eval(), tiny.tokenizer)
    (mean, worst), (e_mean, e_worst) = score(["a b"], ["c "], ["d e f"]) + score(["x"], [""], [""])
    assert (e_mean, e_worst) == (0.0, 0.0)
    tok = tiny.tokenizer
    ctx = tok("Question: a b\nAnswer: c ")["input_ids"]
    ans = tok("d e f", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([list(ctx) + list(ans)])
    with torch.no_grad():
        logp = tiny.model(ids).logits[0].float().log_softmax(-1)
    nll = [-float(logp[len(ctx) + i - 1, t]) for i, t in enumerate(ans)]
    assert mean == pytest.approx(sum(nll) / len(nll), rel=1e-4)
    assert worst == pytest.approx(max(nll), rel=1e-4)
    assert math.isfinite(mean)
