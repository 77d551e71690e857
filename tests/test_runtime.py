"""The runtime configuration: names, the refusal of a device that is not there, bfloat16 on the
CPU through the backend, the reward heads and the CLI, and the MRM head's memory."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from saffron.cli import main
from saffron.cli.args import byte_size
from saffron.errors import SaffronError
from saffron.lm.backend import TrieBackend
from saffron.lm.models import TINY, LoadedModel, load_model, tiny_random_llama
from saffron.lm.policy import make_policy
from saffron.reward.guard import ReadoutGuard
from saffron.reward.mrm import MRM, Layout, RewardHead
from saffron.runtime import CPU, RuntimeConfig, check_device

NO_CUDA = not torch.cuda.is_available()


def test_names_and_sizes() -> None:
    assert RuntimeConfig(dtype="bf16").torch_dtype is torch.bfloat16
    assert RuntimeConfig(dtype="FP16").dtype == "float16"
    assert CPU.on_cpu and CPU.device_map() is None and CPU.dtype == "float32"
    assert [byte_size(x) for x in ("512", "1K", "512M", "2G", "1.5GiB")] == [
        512,
        1024,
        512 * 2**20,
        2 * 2**30,
        3 * 2**29,
    ]
    for bad in ("", "lots", "-1G", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            byte_size(bad)
    with pytest.raises(SaffronError, match="unknown dtype 'int8'; expected one of float32"):
        RuntimeConfig(dtype="int8")
    with pytest.raises(SaffronError, match="unknown device 'gpu0'"):
        RuntimeConfig(device="gpu0")
    with pytest.raises(SaffronError, match="unsupported device 'meta'"):
        RuntimeConfig(device="meta")
    with pytest.raises(SaffronError, match="threads must be"):
        RuntimeConfig(threads=0)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
def test_a_missing_gpu_is_one_line_before_any_weight_is_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SaffronError, match=r"device 'cuda' is not available: .* no CUDA GPU"):
        check_device("cuda")
    with pytest.raises(SaffronError, match="device 'cuda:1' is not available"):
        load_model(TINY, RuntimeConfig(device="cuda:1"))
    for argv in (
        ["generate", "--prompt", "hi", "--policy", TINY, "--device", "cuda"],
        ["eval", "--dataset", "advbench", "--methods", "greedy", "--out", "x", "--device", "cuda"],
        ["label", "--corpus", __file__, "--device", "cuda"],
        ["train-mrm", "--device", "cuda:0"],
    ):
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2 and out == "", argv
        assert err.startswith("saffron: error: device 'cuda") and err.count("\n") == 1, err


def tiny_guard(dtype: torch.dtype) -> ReadoutGuard:
    model, tok = tiny_random_llama(seed=5, dtype=dtype)
    return ReadoutGuard(
        TrieBackend(LoadedModel("tiny-guard", model, tok)),
        name="tiny-guard",
        policy_tokenizer=tok,
        safe_word="s",
        unsafe_word="u",
    )


def test_bfloat16_on_the_cpu_runs_the_tiny_world_with_float32_outputs() -> None:
    full = make_policy(load_model(TINY))
    half = make_policy(load_model(TINY, RuntimeConfig(dtype="bfloat16")))
    assert next(half.backend.model.parameters()).dtype is torch.bfloat16
    assert half.backend.pool.keys.dtype is torch.bfloat16
    seq = half.chat.sequence("how do I bake bread", reserve=8)
    a, b = full.next_logits([seq]), half.next_logits([seq])
    assert b.dtype is torch.float32 and torch.isfinite(b).all()
    assert torch.corrcoef(torch.stack([a[0], b[0]]))[0, 1] > 0.99  # the same model, rounded
    gen = seq.with_generated(tuple(seq.tokens[-3:]))
    for guard in (tiny_guard(torch.bfloat16),):
        assert guard.score([gen]).dtype is torch.float32
        assert guard.score_prefixes([gen])[0].dtype is torch.float32
    backend = TrieBackend(LoadedModel("tiny-mrm", *tiny_random_llama(seed=7, dtype=torch.bfloat16)))
    vocab = backend.vocab_size
    mrm = MRM(
        backend,
        name="tiny-mrm",
        layout=Layout((1,), (2,)),
        bias=torch.zeros(vocab),
        unseen=torch.zeros(vocab, dtype=torch.bool),
    )
    assert mrm.rewards([gen]).dtype is torch.float32
    assert mrm.head.bias.dtype is torch.float32


def test_generate_in_bfloat16_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "--prompt", "hi", "--policy", TINY, "--max-new-tokens", "4"]
    argv += ["--min-new-tokens", "1", "--method", "sample"]
    assert main([*argv, "--dtype", "bf16", "--kv-budget", "64M", "--json"]) == 0
    assert '"text"' in capsys.readouterr().out


class _Allocations(TorchDispatchMode):
    """Records the element count of every tensor an op returns in new memory (views of an
    input, such as a transpose, share its storage and are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        given = {
            a.untyped_storage().data_ptr()
            for a in [*args, *(kwargs or {}).values()]
            if isinstance(a, torch.Tensor)
        }
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in given:
                self.sizes.append(t.numel())
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_mrm_head_never_copies_its_vocabulary_weight(dtype: torch.dtype) -> None:
    vocab, d = 4096, 64
    weight = torch.randn(vocab, d, dtype=dtype)
    head = RewardHead(weight, torch.zeros(vocab))
    hidden = torch.randn(3, d, dtype=dtype)
    with torch.inference_mode(), _Allocations() as seen:
        out = head(hidden)
        head.gather(hidden, torch.tensor([1, 2, 3]))
    assert out.dtype is torch.float32 and out.shape == (3, vocab)
    assert max(seen.sizes) < vocab * d  # nothing the size of W: no cast, no transpose copy
    assert head.weight.data_ptr() == weight.data_ptr()  # held by reference


def test_the_budget_is_in_bytes_whatever_the_dtype() -> None:
    """The trie's byte budget is in bytes: a bf16 position costs half a float32 one."""
    budget = 2**20
    full = TrieBackend(load_model(TINY), max_bytes=budget)
    half = TrieBackend(load_model(TINY, RuntimeConfig(dtype="bfloat16")), max_bytes=budget)
    assert abs(half.pool.max_slots - 2 * full.pool.max_slots) <= 1
    seqs = [list(range(3, 40)), [*range(3, 30), 7, 7]]
    half.last_hidden(seqs)
    assert half.stats().bytes_peak <= budget
