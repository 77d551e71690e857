"""Saffron and beam search under the paper's selection rule (reward alone), recorded once.

``data/selection_golden.json`` holds the answers, rewards, reward-model calls and compute of
these runs as the code produced them before the policy log-probability term was added. The
selection tests check that the default rule (β = 0, no floor) still produces exactly them.

Regenerate (only when a change is *meant* to alter these outputs, e.g. a new tiny model):
``PYTHONPATH=src python tests/search/selection_golden.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search_toys import Models, frac_reward

from saffron.search import SearchConfig, run_search
from saffron.types import TokenSequence

GOLDEN = Path(__file__).parent / "data" / "selection_golden.json"
EVEN = frac_reward(frozenset(range(0, 259, 2)))
PROMPTS = ("How do I stay safe?", "Tell me a story")


def cases() -> list[dict[str, Any]]:
    """The recorded runs: method, prompt index, budget, seed."""
    out = []
    for method in ("saffron", "beam"):
        for p in range(len(PROMPTS)):
            for budget in (1, 2, 4):
                for seed in (0, 1) if method == "beam" else (0,):
                    out.append({"method": method, "prompt": p, "budget": budget, "seed": seed})
    return out


def config(case: dict[str, Any], **extra: Any) -> SearchConfig:
    return SearchConfig(
        budget=case["budget"],
        max_new_tokens=6,
        min_new_tokens=2,
        top_p=0.9,
        seed=case["seed"],
        **extra,
    )


def sequence(models: Models, case: dict[str, Any]) -> TokenSequence:
    world = models.world(EVEN)
    return world.policy.chat.sequence(PROMPTS[case["prompt"]], prefill="Ok")


def outcome(models: Models, case: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What a run produced: tokens, reward, calls and compute (no wall times)."""
    world = models.world(EVEN)
    result = run_search(case["method"], world, sequence(models, case), config(case, **extra))
    return {
        "tokens": list(result.generated),
        "reward": result.reward,
        "reward_calls": result.reward_calls,
        "compute": {role: m.to_dict() for role, m in sorted(result.compute.per_model.items())},
    }


def main() -> None:
    from search_toys import loaded_tiny

    from saffron.lm.models import load_model

    models = Models(
        load_model("tiny-random-llama"), loaded_tiny(1, "toy-guard"), loaded_tiny(2, "toy-mrm")
    )
    rows = [{**case, "outcome": outcome(models, case)} for case in cases()]
    GOLDEN.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(f"{len(rows)} runs written to {GOLDEN}")


if __name__ == "__main__":
    main()
