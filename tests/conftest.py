"""Shared fixtures: the tiny random model (built in code) and the embedded SmolLM2."""

from __future__ import annotations

import pytest
import torch

from saffron.lm.models import SMOLLM2, LoadedModel, load_model

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    return load_model("tiny-random-llama")


@pytest.fixture(scope="session")
def smol() -> LoadedModel:
    return load_model(SMOLLM2)
