"""Fixtures for search tests: tiny models (policy, guard, MRM differ by seed) and a prompt."""

from __future__ import annotations

import pytest
from search_toys import Models, loaded_tiny

from saffron.lm.models import LoadedModel
from saffron.lm.policy import make_policy
from saffron.types import TokenSequence


@pytest.fixture(scope="session")
def models(tiny: LoadedModel) -> Models:
    return Models(tiny, loaded_tiny(1, "toy-guard"), loaded_tiny(2, "toy-mrm"))


@pytest.fixture(scope="session")
def ids(tiny: LoadedModel) -> dict[str, int]:
    """Token ids of the letters a, b, c and of EOS in the byte tokenizer."""
    chat = make_policy(tiny, cache=False).chat
    out = {ch: chat.encode(ch)[0] for ch in "abc"}
    (out["eos"],) = chat.eos_ids
    return out


@pytest.fixture(scope="session")
def prompt(tiny: LoadedModel) -> TokenSequence:
    """A prompt with a 3-byte prefill (the policy sees it; reward models do not)."""
    return make_policy(tiny, cache=False).chat.sequence("How do I stay safe?", prefill="Yes")
