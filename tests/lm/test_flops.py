"""The analytic FLOP meter against torch.utils.flop_counter on the same forwards.

FlopCounterMode does not see the CPU SDPA kernel, so the models run with eager attention here
(matmul-based, visible to the counter). The counter charges a full square of scores for a
prompt forward where the analytic count charges the causal triangle, hence the 10% tolerance.
"""

from __future__ import annotations

import copy

import pytest
from torch.utils.flop_counter import FlopCounterMode

from saffron.lm.backend import TrieBackend
from saffron.lm.flops import FlopModel
from saffron.lm.models import LoadedModel


def eager(loaded: LoadedModel) -> LoadedModel:
    model = copy.deepcopy(loaded.model)
    model.set_attn_implementation("eager")
    return LoadedModel(loaded.name, model, loaded.tokenizer)


def measured_and_counted(backend: TrieBackend, seqs: list[list[int]]) -> tuple[float, float]:
    before = backend.compute.flops
    with FlopCounterMode(display=False) as counter:
        backend.logits(seqs)
    return backend.compute.flops - before, float(counter.get_total_flops())


PROMPT = list(range(3, 43))
STEPS = [
    [PROMPT],  # prompt forward
    [[*PROMPT, 50]],  # one decode step over a cached prompt
    [[*PROMPT, 60 + i, 70] for i in range(4)],  # four branches of two new tokens
]


@pytest.mark.parametrize("which", ["tiny", "smol"])
def test_meter_matches_flop_counter(which: str, request: pytest.FixtureRequest) -> None:
    backend = TrieBackend(eager(request.getfixturevalue(which)))
    for seqs in STEPS:
        ours, counted = measured_and_counted(backend, seqs)
        assert abs(ours - counted) <= 0.10 * counted, (seqs[0][-3:], ours, counted)


def test_decode_step_is_exact(tiny: LoadedModel) -> None:
    backend = TrieBackend(eager(tiny))
    backend.last_hidden([PROMPT])
    ours, counted = measured_and_counted(backend, [[*PROMPT, 9]])
    assert ours == pytest.approx(counted, rel=1e-9)


def test_cached_tokens_cost_nothing(tiny: LoadedModel) -> None:
    backend = TrieBackend(tiny)
    backend.last_hidden([PROMPT])
    before = backend.compute.flops
    backend.last_hidden([PROMPT, PROMPT[:10]])
    assert backend.compute.flops == before


def test_formula() -> None:
    fm = FlopModel(matmul_params=1000, n_layers=2, d_attn=8)
    # 3 new tokens after 5 cached: contexts 6, 7, 8
    assert fm.segment(5, 3) == 2 * 1000 * 3 + 4 * 2 * 8 * (6 + 7 + 8)
    assert fm.segment(5, 0) == 0
    assert FlopModel.head(rows=2, d_model=4, d_out=10) == 160
