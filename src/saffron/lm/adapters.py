"""LoRA adapters over registered base models: saving without machine paths, merging, and the
weight fingerprint that lets a run refuse to resume with other weights under the same name.

Every trained embedded artifact (``smol-guard``, ``smol-mrm``, ``smol-aligned``, …) is a PEFT
adapter folder in :func:`saffron.paths.artifacts_dir` whose ``adapter_config.json`` names its
base by registry name, plus a ``meta.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from peft import PeftModel

from saffron.errors import SaffronError
from saffron.files import sha256_files, write_json
from saffron.lm.models import LoadedModel, load_model
from saffron.paths import artifacts_dir
from saffron.runtime import CPU, RuntimeConfig


def save_adapter(model: PeftModel, folder: Path, base_name: str) -> None:
    """``save_pretrained`` without machine paths: the adapter names its base by registry name.

    PEFT records the base model's local folder (a path in this machine's cache) and writes a
    generic model card; neither belongs in a committed artifact. Saffron loads the base by name
    and applies the adapter to it, so ``base_model_name_or_path`` is informative only.
    """
    model.save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)
    cfg_path = folder / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_name
    write_json(cfg_path, cfg, sort_keys=True)


def artifact_folder(name: str) -> Path:
    """The folder of an embedded artifact name, else ``name`` read as a path."""
    embedded = artifacts_dir() / name
    return embedded if embedded.is_dir() else Path(name).expanduser()


def fingerprint(name: str) -> str | None:
    """sha256 over the weight files of an embedded artifact (``smol-guard``, ``smol-mrm``,
    ``smol-aligned``) or a local folder; None for names that are not folders here (hub ids,
    built-in models). Lets an eval run refuse to resume with different weights."""
    folder = artifact_folder(name)
    if not folder.is_dir():
        return None
    return sha256_files(sorted(folder.glob("*.safetensors")))[:16]


def merged_adapter(
    base_name: str,
    folder: Path,
    name: str,
    *,
    trainer: str = "",
    runtime: RuntimeConfig = CPU,
) -> LoadedModel:
    """Base model with the LoRA adapter in ``folder`` merged in (no extra latency).

    ``trainer`` names the command that writes such a folder, for the error message; the base
    is loaded with ``runtime`` (device, dtype).
    """
    if not (folder / "adapter_config.json").is_file():
        how = f" or run `saffron {trainer}`" if trainer else ""
        raise SaffronError(f"the {name} artifacts are missing in {folder}; reinstall Saffron{how}")
    base = load_model(base_name, runtime)
    return merge_lora(base, folder, name, error=f"the {name} adapter in {folder} is corrupt")


def merge_lora(base: LoadedModel, folder: Path, name: str, *, error: str) -> LoadedModel:
    """``base`` with the PEFT LoRA adapter in ``folder`` merged into its weights, in eval mode,
    renamed ``name`` (same tokenizer). ``base.model`` is mutated: the merge happens in place.

    An adapter that cannot be read or does not fit raises SaffronError ``"<error>: <reason>"``.
    """
    try:
        merged = PeftModel.from_pretrained(base.model, str(folder)).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise SaffronError(f"{error}: {err}") from err
    merged.eval()
    return LoadedModel(name=name, model=merged, tokenizer=base.tokenizer)


def policy_base(name: str) -> str:
    """The registry name of the base model under a policy written by ``saffron train-policy``
    (an embedded name such as ``smol-aligned``, or its folder), from its ``meta.json``."""
    folder = artifact_folder(name)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise SaffronError(
            f"the policy {name} is missing ({meta_path} not found); reinstall Saffron or run "
            "`saffron train-policy`"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        base = str(meta["base"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SaffronError(f"the policy {name}'s meta.json is corrupt: {err}") from err
    return base


def load_policy_adapter(name: str, runtime: RuntimeConfig = CPU) -> LoadedModel:
    """A policy written by ``saffron train-policy`` (an embedded name such as ``smol-aligned``,
    or its folder): the base named in its ``meta.json`` with the adapter merged in."""
    base = policy_base(name)
    folder = artifact_folder(name)
    return merged_adapter(base, folder, name, trainer="train-policy", runtime=runtime)
