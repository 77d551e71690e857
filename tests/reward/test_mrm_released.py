"""Compatibility with the MRM released with the paper (the folder named by $SAFFRON_RELEASED_MRM):
the real files' shapes and dtypes, and a tiny stand-in folder in the same format loaded on a
tiny base."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from saffron.errors import SaffronError
from saffron.lm.models import LoadedModel, byte_tokenizer, tiny_random_llama
from saffron.reward.mrm_load import load_mrm
from saffron.reward.released import (
    RELEASED_BASE,
    load_released,
    read_released,
    released_layout,
)
from saffron.types import TokenSequence

RELEASED_ENV = "SAFFRON_RELEASED_MRM"  # the released Saffron-1-1B folder (`make test` sets it)
RELEASED = Path(os.environ.get(RELEASED_ENV) or "/nonexistent").expanduser()
needs_release = pytest.mark.skipif(
    not RELEASED.is_dir(), reason=f"set {RELEASED_ENV} to the released Saffron-1-1B folder"
)
BASE_SEED = 11


@needs_release
def test_released_files_have_the_documented_shapes_and_dtypes() -> None:
    files = read_released(RELEASED, vocab=128256, hidden=2048)
    assert files.base == RELEASED_BASE
    assert files.rank == 4 and sorted(files.targets) == ["q_proj", "v_proj"]
    assert files.hidden == 2048 and files.vocab == 128256
    assert files.bias.dtype == torch.float32 and files.bias.shape == (128256,)
    assert files.unseen.dtype == torch.bool and int(files.unseen.sum()) == 92013
    assert files.unseen[128009]  # the release masks EOS (<|eot_id|>): a flaw we do not copy
    # the release's bias is PyTorch's default init: |b| ≤ 1/sqrt(2048)
    assert float(files.bias.abs().max()) <= 2048**-0.5 + 1e-3


@needs_release
def test_released_files_refuse_a_base_of_another_size() -> None:
    with pytest.raises(SaffronError) as err:
        read_released(RELEASED, vocab=49152, hidden=576)
    assert str(err.value) == (
        f"the MRM in {RELEASED} needs a base with vocabulary 128256 and hidden size 2048 "
        f"({RELEASED_BASE}); the given base has vocabulary 49152 and hidden size 576"
    )


def tiny_base() -> LoadedModel:
    model, tok = tiny_random_llama(seed=BASE_SEED)
    model.eval()
    return LoadedModel("tiny-base", model, tok)


@pytest.fixture()
def released(tmp_path: Path) -> Path:
    """A released-format folder for the tiny base: PEFT adapter (r 4, q/v, non-zero B),
    bias as a bf16 Parameter in a .pt (as released), bool unseen mask in a .pt."""
    base = tiny_base()
    lora = LoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    peft = get_peft_model(base.model, lora)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    folder = tmp_path / "released"
    peft.save_pretrained(str(folder))
    bias = torch.nn.Parameter(torch.linspace(-0.02, 0.02, 259).to(torch.bfloat16))
    torch.save(bias, folder / "lm_head_bias.pt")
    unseen = torch.zeros(259, dtype=torch.bool)
    unseen[[0, 1, 2, 100]] = True
    torch.save(unseen, folder / "unseen_mask.pt")
    return folder


def test_a_released_format_folder_loads_on_its_base(released: Path) -> None:
    mrm = load_released(released, tiny_base(), name="tiny-released")
    tok = byte_tokenizer()
    assert mrm.layout == released_layout(tok)
    assert mrm.layout.prefix == (1, *tok.encode("\n\nUser:", add_special_tokens=False))
    s = TokenSequence((1,), (40, 41), (2,), (90,), (60, 61))
    assert mrm.tokens(s) == (*mrm.layout.prefix, 40, 41, *mrm.layout.infix, 60, 61)
    out = mrm.rewards([s])
    assert out.shape == (1, 259)
    assert torch.all(torch.isneginf(out[0, [0, 1, 2, 100]]))
    assert torch.isfinite(out[0, 3:100]).all()
    # the merged adapter changes the output, and the bias is added
    plain = tiny_base()
    with torch.no_grad():
        logits = plain.model(torch.tensor([mrm.tokens(s)])).logits[0, -1]
    raw = mrm.rewards([s], conservative=False)[0]
    assert not torch.allclose(raw, logits, atol=1e-3)
    released_bias = torch.linspace(-0.02, 0.02, 259).to(torch.bfloat16).float()
    assert torch.equal(mrm.head.bias.detach(), released_bias)


def test_load_mrm_recognises_the_released_format(released: Path, monkeypatch) -> None:
    import saffron.reward.released as rel

    monkeypatch.setattr(rel, "load_model", lambda name, *_, **__: tiny_base())
    with pytest.raises(SaffronError) as err:
        load_mrm(str(released), policy_vocab=49152)
    assert "scores a vocabulary of 259 tokens but the policy has 49152" in str(err.value)
    assert load_mrm(str(released), policy_vocab=259).vocab_size == 259


def test_a_base_of_another_hidden_size_or_vocabulary_is_refused(released: Path) -> None:
    tok = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=259,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    narrow = LoadedModel("narrow", LlamaForCausalLM(config).eval(), tok)
    with pytest.raises(SaffronError) as err:
        load_released(released, narrow)
    assert str(err.value) == (
        f"the MRM in {released} needs a base with vocabulary 259 and hidden size 64 "
        f"({read_released(released).base}); the given base has "
        "vocabulary 259 and hidden size 32"
    )
    wide_config = LlamaConfig(**{**config.to_dict(), "hidden_size": 64, "vocab_size": 300})
    wide = LoadedModel("wide", LlamaForCausalLM(wide_config).eval(), tok)
    with pytest.raises(SaffronError, match="the given base has vocabulary 300 and hidden size 64"):
        load_released(released, wide)


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickles_that_are_not_plain_tensors_are_refused(released: Path) -> None:
    with open(released / "unseen_mask.pt", "wb") as fh:
        pickle.dump(Payload(), fh)
    with pytest.raises(SaffronError, match=r"unseen_mask\.pt is not a plain tensor file"):
        read_released(released)
    torch.save({"bias": torch.zeros(3)}, released / "lm_head_bias.pt")
    with pytest.raises(SaffronError, match=r"lm_head_bias\.pt holds a dict, not a tensor"):
        read_released(released)


def test_missing_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(SaffronError) as err:
        read_released(tmp_path)
    assert str(err.value) == (
        f"{tmp_path} is not a released Saffron-1 MRM folder: missing "
        "adapter_model.safetensors, lm_head_bias.pt, unseen_mask.pt"
    )
