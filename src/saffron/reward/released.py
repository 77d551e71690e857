"""Loader for the MRM released with the Saffron-1 paper (``Saffron-1-1B``).

Format (a folder; Apache-2.0, q-rz/saffron ``models/Saffron-1-1B``):

* ``adapter_config.json`` + ``adapter_model.safetensors`` — a PEFT LoRA adapter (r 4, alpha 4,
  q_proj/v_proj) for ``meta-llama/Llama-Guard-3-1B`` (hidden 2048, vocabulary 128256);
* ``lm_head_bias.pt`` — the head bias, a (V,) tensor (bfloat16 in the release);
* ``unseen_mask.pt`` — (V,) bool, True = unseen (mapped to −∞ here, not the release's −1024).

The ``.pt`` files are torch pickles of plain tensors; they are read ONLY with
``torch.load(weights_only=True)``, which refuses arbitrary objects. The input layout is
``"<bos>\\n\\nUser:" | prompt | "\\n\\nAgent:" | generated``, no suffix.

Known flaws of the release, kept visible rather than patched: its mask marks EOS and every
special token unseen (a beam cannot end on merit), and its bias equals PyTorch's default
initialisation (untrained; the released code never used it in the forward pass). We load the
files as they are; the bias is used, as the method intends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from saffron.errors import SaffronError
from saffron.lm.models import LoadedModel, load_model
from saffron.reward.mrm import MRM, Layout, MRMParts, merged_mrm
from saffron.runtime import CPU, RuntimeConfig

RELEASED_BASE = "meta-llama/Llama-Guard-3-1B"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BIAS_PT = "lm_head_bias.pt"
UNSEEN_PT = "unseen_mask.pt"
RELEASED_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, BIAS_PT, UNSEEN_PT)


@dataclass(frozen=True)
class ReleasedFiles:
    """The validated content of a released-format folder (tensors on CPU)."""

    folder: Path
    base: str
    rank: int
    targets: tuple[str, ...]
    hidden: int
    bias: Tensor  # (V,) float32
    unseen: Tensor  # (V,) bool

    @property
    def vocab(self) -> int:
        return int(self.bias.shape[0])


def is_released(folder: Path) -> bool:
    return (folder / BIAS_PT).is_file() and (folder / UNSEEN_PT).is_file()


def released_layout(tokenizer: PreTrainedTokenizerBase) -> Layout:
    """``"<bos>\\n\\nUser:" | prompt | "\\n\\nAgent:"`` in ``tokenizer``'s ids."""
    enc = tokenizer.encode
    bos = (int(tokenizer.bos_token_id),) if tokenizer.bos_token_id is not None else ()
    return Layout(
        prefix=bos + tuple(enc("\n\nUser:", add_special_tokens=False)),
        infix=tuple(enc("\n\nAgent:", add_special_tokens=False)),
    )


def _load_tensor(path: Path) -> Tensor:
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # weights_only refusal, truncated file, bad zip …
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SaffronError(f"{path} is not a plain tensor file: {first}") from err
    if not isinstance(obj, Tensor):
        raise SaffronError(f"{path} holds a {type(obj).__name__}, not a tensor")
    return obj.detach()


def _adapter_hidden(path: Path, rank: int) -> int:
    """The hidden size the adapter was made for: input width of every LoRA A matrix."""
    widths: set[int] = set()
    try:
        with safe_open(str(path), "pt") as fh:
            for key in fh.keys():  # noqa: SIM118  (safe_open is not a mapping)
                shape = tuple(fh.get_slice(key).get_shape())
                if len(shape) != 2:
                    raise SaffronError(f"{path}: tensor {key} has shape {shape}, not 2-D")
                if ".lora_A." in key:
                    if shape[0] != rank:
                        raise SaffronError(f"{path}: {key} has rank {shape[0]}, config says {rank}")
                    widths.add(shape[1])
                elif ".lora_B." in key and shape[1] != rank:
                    raise SaffronError(f"{path}: {key} has rank {shape[1]}, config says {rank}")
    except SafetensorError as err:
        raise SaffronError(f"{path} is not a valid safetensors file: {err}") from err
    if len(widths) != 1:
        raise SaffronError(f"{path}: LoRA input widths {sorted(widths)} (expected one size)")
    return widths.pop()


def read_released(
    folder: Path, *, vocab: int | None = None, hidden: int | None = None
) -> ReleasedFiles:
    """Read and validate a released-format folder, without the base model.

    ``vocab`` / ``hidden``: the base's vocabulary and hidden sizes, when known; a mismatch is
    refused with one line. Raises SaffronError for missing or malformed files.
    """
    missing = [f for f in RELEASED_FILES if not (folder / f).is_file()]
    if missing:
        raise SaffronError(
            f"{folder} is not a released Saffron-1 MRM folder: missing {', '.join(missing)}"
        )
    try:
        cfg = json.loads((folder / ADAPTER_CONFIG).read_text())
        rank, targets = int(cfg["r"]), tuple(str(t) for t in cfg["target_modules"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise SaffronError(f"{folder / ADAPTER_CONFIG} is malformed: {err}") from err
    width = _adapter_hidden(folder / ADAPTER_WEIGHTS, rank)
    bias, unseen = _load_tensor(folder / BIAS_PT), _load_tensor(folder / UNSEEN_PT)
    if bias.dim() != 1 or not bias.is_floating_point():
        raise SaffronError(
            f"{folder / BIAS_PT}: expected a 1-D float tensor, got {bias.dtype} {tuple(bias.shape)}"
        )
    if unseen.dtype != torch.bool or unseen.shape != bias.shape:
        raise SaffronError(
            f"{folder / UNSEEN_PT}: expected bool of shape {tuple(bias.shape)}, got "
            f"{unseen.dtype} {tuple(unseen.shape)}"
        )
    files = ReleasedFiles(
        folder=folder,
        base=str(cfg.get("base_model_name_or_path") or RELEASED_BASE),
        rank=rank,
        targets=targets,
        hidden=width,
        bias=bias.float(),
        unseen=unseen.clone(),
    )
    if (vocab is not None and vocab != files.vocab) or (hidden is not None and hidden != width):
        raise SaffronError(
            f"the MRM in {folder} needs a base with vocabulary {files.vocab} and hidden size "
            f"{width} ({files.base}); the given base has vocabulary {vocab} and hidden size "
            f"{hidden}"
        )
    return files


def load_released(
    folder: Path,
    base: LoadedModel | None = None,
    *,
    name: str | None = None,
    runtime: RuntimeConfig = CPU,
) -> MRM:
    """The released MRM on a trie backend: base (default: the one its adapter names, loaded with
    ``runtime``) with the LoRA merged in, the released bias (float32), unseen tokens −∞.

    ``base`` is mutated (the adapter is merged into its weights).
    """
    name = name or folder.name
    files = read_released(folder)  # validate before loading a large base
    base = base if base is not None else load_model(files.base, runtime)
    config = base.model.config
    read_released(
        folder,
        vocab=base.model.get_output_embeddings().out_features,
        hidden=int(config.hidden_size),
    )
    meta: dict[str, object] = {
        "format": "saffron-1-released",
        "base": files.base,
        "rank": files.rank,
    }
    parts = MRMParts(name, released_layout(base.tokenizer), files.bias, files.unseen, meta)
    return merged_mrm(
        base,
        folder,
        parts,
        kv_budget=runtime.kv_budget,
        error=f"the adapter in {folder} does not fit {base.name}",
    )
