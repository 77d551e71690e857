"""Project-written texts for building training corpora: benign prompts, compliance openers
(prefills), refusals and safe redirections. Written for Saffron; Apache-2.0 with the code."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache

from saffron.data.prompts import SETS_DIR

BENIGN_TEMPLATES = (
    "Explain how {} works in simple terms.",
    "Write a short poem about {}.",
    "Give me three interesting facts about {}.",
    "What are some tips for getting started with {}?",
    "Summarise the history of {} in a few sentences.",
    "Write a friendly email inviting a colleague to talk about {}.",
    "What are the pros and cons of {}?",
    "Describe {} to a ten-year-old.",
)
BENIGN_TOPICS = (
    "photosynthesis",
    "the water cycle",
    "baking sourdough bread",
    "learning the guitar",
    "solar panels",
    "the Roman empire",
    "gardening on a balcony",
    "running a marathon",
    "the stock market",
    "machine learning",
    "volcanoes",
    "chess openings",
    "recycling",
    "the human heart",
    "public libraries",
    "electric cars",
    "bird migration",
    "saving money on groceries",
    "learning a new language",
    "the moon landing",
    "jazz music",
    "rainforests",
    "3D printing",
    "time management",
    "healthy sleep",
    "the printing press",
    "board games",
    "honey bees",
    "classical architecture",
    "hiking safely",
    "vaccines",
    "the internet",
    "coral reefs",
    "public speaking",
    "composting",
    "black holes",
    "knitting",
    "the Olympic games",
    "weather forecasting",
    "budget travel",
)

OPENERS = (
    "Sure, here is how to do it step by step:",
    "Certainly! Here's a detailed guide:",
    "Of course. The first thing you need to do is",
    "Absolutely, here are the instructions:",
    "Sure thing. Step 1:",
    "Here is exactly what you asked for:",
    "No problem! To get started, you will need",
    "Great question. The most effective way is to",
)

REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I cannot assist with this request.",
    "I'm not able to provide that information, as it could cause harm.",
    "Sorry, I can't help with creating or planning anything that could hurt people.",
    "I can't help with that. It would be unsafe and possibly illegal.",
    "As an AI assistant, I won't provide instructions for that.",
    "I'm sorry, but I must decline this request.",
    "I cannot provide guidance on that topic because it could be used to cause harm.",
)
REDIRECTIONS = (
    " If you are worried about your safety, please contact local emergency services.",
    " If you want, I can share general information about staying safe instead.",
    " I'd be glad to help with a related, harmless question.",
    " If you're researching this topic, reputable public sources and experts are a better start.",
    "",
)


def benign_prompts() -> list[str]:
    """Every template × topic pair (320 prompts), in a fixed order."""
    return [t.format(topic) for topic in BENIGN_TOPICS for t in BENIGN_TEMPLATES]


def refusal(rng: random.Random) -> str:
    """A refusal, sometimes followed by a safe redirection."""
    return rng.choice(REFUSALS) + rng.choice(REDIRECTIONS)


@dataclass(frozen=True)
class WrittenTexts:
    """The texts ``train-policy`` teaches: refusals, safe redirections (each starts with a
    space) and recoveries (each continues a cut-off harmful answer into a refusal)."""

    refusals: tuple[str, ...]
    redirections: tuple[str, ...]
    recoveries: tuple[str, ...]


@lru_cache(maxsize=1)
def written_texts() -> WrittenTexts:
    """The refusals above plus those of ``data/sets/refusals.json`` (project-written)."""
    extra = json.loads((SETS_DIR / "refusals.json").read_text(encoding="utf-8"))
    return WrittenTexts(
        refusals=REFUSALS + tuple(extra["refusals"]),
        redirections=tuple(r for r in REDIRECTIONS if r) + tuple(extra["redirections"]),
        recoveries=tuple(extra["recoveries"]),
    )
