"""Loading an MRM by name: the embedded ``smol-mrm``, a folder written by ``saffron train-mrm``,
or a folder in the released Saffron-1 format (:mod:`saffron.reward.released`).

Format of a ``saffron train-mrm`` folder (``MRM_FORMAT`` = ``saffron-mrm/1``):

* ``adapter_config.json``, ``adapter_model.safetensors`` — the PEFT LoRA adapter, relative to
  the guard's merged network;
* ``head_bias.safetensors`` — tensor ``bias``: (V,) float32;
* ``unseen_mask.safetensors`` — tensor ``unseen``: (V,) bool, True = never supervised;
* ``meta.json`` — ``format``, ``base_guard`` (guard name or folder; the backbone), ``layout``
  (``prefix``/``infix`` token ids), ``policy`` / ``policy_vocab_hash`` / ``vocab_size``,
  ``config``, ``split`` (held-out rule), training statistics.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from saffron.errors import SaffronError
from saffron.files import read_format
from saffron.lm.models import LoadedModel
from saffron.lm.policy import Policy
from saffron.lm.vocab import vocab_hash
from saffron.reward.guard import ReadoutGuard
from saffron.reward.loading import ARTIFACTS, load_guard
from saffron.reward.mrm import (
    BIAS_FILE,
    META_FILE,
    MRM,
    MRM_FORMAT,
    UNSEEN_FILE,
    Layout,
    MRMParts,
    merged_mrm,
)
from saffron.reward.released import is_released, load_released, released_layout
from saffron.runtime import CPU, RuntimeConfig

SMOL_MRM = "smol-mrm"
MRMS = {
    SMOL_MRM: "MRM trained by Saffron from smol-guard-aligned for SmolLM2-135M-Instruct: the "
    "aligned policies' answers and the states Saffron visits (embedded)",
    "<folder>": "a `saffron train-mrm` folder, or a released Saffron-1 folder (lm_head_bias.pt)",
}


def mrm_dir(name: str = SMOL_MRM) -> Path:
    return ARTIFACTS / name


def guard_backbone(guard_name: str, runtime: RuntimeConfig = CPU) -> tuple[LoadedModel, Layout]:
    """The guard's network (LoRA merged; a fresh copy the caller may modify) and the MRM input
    layout that goes with it: a readout guard's own judge template, else the released
    Saffron-1 layout."""
    guard = load_guard(guard_name, runtime=runtime)
    loaded = guard.backend.loaded
    if isinstance(guard, ReadoutGuard):
        return loaded, Layout(guard.prefix, guard.infix)
    return loaded, released_layout(loaded.tokenizer)


def _tensor(path: Path, key: str) -> Tensor:
    if not path.is_file():
        raise SaffronError(f"the MRM file {path} is missing")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise SaffronError(f"the MRM file {path} is corrupt: {err}") from err
    if key not in tensors:
        raise SaffronError(f"the MRM file {path} has no tensor {key!r}")
    return tensors[key]


def read_meta(folder: Path) -> dict[str, object]:
    """The ``meta.json`` of a ``saffron train-mrm`` folder; SaffronError when unreadable or of
    another format."""
    return read_format(
        folder / META_FILE,
        MRM_FORMAT,
        unreadable="the MRM metadata {path} is unreadable",
        kind="metadata file",
    )


def load_trained(
    folder: Path,
    backbone: LoadedModel | None = None,
    *,
    name: str | None = None,
    runtime: RuntimeConfig = CPU,
) -> MRM:
    """An MRM folder written by ``saffron train-mrm``, LoRA merged, on a trie backend.

    ``backbone``: the guard network to start from (default: load ``meta["base_guard"]``);
    it is mutated (the adapter is merged into it).
    """
    meta = read_meta(folder)
    name = name or folder.name
    bias = _tensor(folder / BIAS_FILE, "bias").float()
    unseen = _tensor(folder / UNSEEN_FILE, "unseen").to(torch.bool)
    layout_d = meta.get("layout")
    if not isinstance(layout_d, dict):
        raise SaffronError(f"{folder / META_FILE} has no layout")
    layout = Layout(tuple(layout_d["prefix"]), tuple(layout_d["infix"]))
    if backbone is None:
        backbone, _ = guard_backbone(str(meta["base_guard"]), runtime)
    vocab = int(backbone.model.get_output_embeddings().out_features)
    if bias.shape != (vocab,) or unseen.shape != (vocab,):
        raise SaffronError(
            f"the MRM in {folder} scores {bias.shape[0]} tokens but its backbone "
            f"{backbone.name!r} has a vocabulary of {vocab}"
        )
    return merged_mrm(
        backbone,
        folder,
        MRMParts(name, layout, bias, unseen, meta),
        kv_budget=runtime.kv_budget,
        error=f"the MRM adapter in {folder} is corrupt",
    )


def load_mrm(
    name: str,
    policy: Policy | None = None,
    *,
    policy_vocab: int | None = None,
    policy_vocab_hash: str | None = None,
    runtime: RuntimeConfig = CPU,
) -> MRM:
    """An MRM by name (``smol-mrm``) or folder; refused when it does not score the policy's
    vocabulary: ``policy`` (its head size and tokenizer), or ``policy_vocab`` (size) and
    ``policy_vocab_hash`` (checked when the folder records one). ``runtime``: the device and
    dtype of its network and its trie's byte budget; reward vectors come back in float32.
    """
    if policy is not None:
        policy_vocab = policy.vocab_size
        policy_vocab_hash = vocab_hash(policy.chat.tokenizer)
    folder = mrm_dir(name) if name == SMOL_MRM else Path(name).expanduser()
    if name == SMOL_MRM and not (folder / META_FILE).is_file():
        raise SaffronError(
            f"the {SMOL_MRM} artifacts are missing in {folder}; run `saffron train-mrm`"
        )
    if (folder / META_FILE).is_file():
        mrm = load_trained(folder, name=name, runtime=runtime)
    elif is_released(folder):
        mrm = load_released(folder, name=name, runtime=runtime)
    else:
        raise SaffronError(f"unknown MRM {name!r}; known: {SMOL_MRM}, or an MRM folder")
    if policy_vocab is not None:
        mrm.check_policy(policy_vocab, policy_vocab_hash)
    return mrm
