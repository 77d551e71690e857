"""Loading guards by name: the embedded ``smol-guard``, Llama Guard 3, or a local folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from saffron.errors import SaffronError
from saffron.lm.backend import TrieBackend
from saffron.lm.models import SMOLLM2, LoadedModel, load_model
from saffron.reward.base import Guard
from saffron.reward.guard import GUARD_SYSTEM, ReadoutGuard, SuffixGuard

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SMOL_GUARD = "smol-guard"
LLAMA_GUARD = "meta-llama/Llama-Guard-3-1B"
GUARDS = {
    SMOL_GUARD: "SmolLM2-135M + LoRA trained by Saffron (embedded, offline), reads every position",
    LLAMA_GUARD: "Llama Guard 3 1B (the paper's guard; gated, online)",
}


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
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def adapter_dir(name: str) -> Path:
    return ARTIFACTS / name


def fingerprint(name: str) -> str | None:
    """sha256 over the weight files of an embedded artifact (``smol-guard``, ``smol-mrm``) or a
    local folder; None for names that are not folders here (hub ids). Lets an eval run refuse
    to resume with different weights under the same name."""
    folder = ARTIFACTS / name if (ARTIFACTS / name).is_dir() else Path(name).expanduser()
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def merged_adapter(base_name: str, folder: Path, name: str, device: str = "cpu") -> LoadedModel:
    """Base model (on ``device``) with the LoRA adapter in ``folder`` merged in (no extra
    latency)."""
    if not (folder / "adapter_config.json").is_file():
        raise SaffronError(
            f"the {name} artifacts are missing in {folder}; reinstall Saffron or run "
            f"`saffron train-guard`"
        )
    base = load_model(base_name, device=device)
    try:
        peft_model = PeftModel.from_pretrained(base.model, str(folder))
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise SaffronError(f"the {name} adapter in {folder} is corrupt: {err}") from err
    merged = peft_model.merge_and_unload()
    merged.eval()
    return LoadedModel(name=name, model=merged, tokenizer=base.tokenizer)


def load_guard(
    name: str,
    policy_tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    kv_budget: int | None = None,
    device: str = "cpu",
) -> Guard:
    """A guard by name: ``smol-guard``, ``meta-llama/Llama-Guard-3-1B``, or a local folder
    holding a smol-guard-style adapter (``adapter_config.json`` + ``meta.json``).

    ``policy_tokenizer`` is the tokenizer of the token ids the guard will be given (default: the
    guard's own). ``device``: the torch device the guard's network runs on.
    """
    budget = {} if kv_budget is None else {"max_bytes": kv_budget}
    if name == SMOL_GUARD or (Path(name) / "meta.json").is_file():
        folder = adapter_dir(SMOL_GUARD) if name == SMOL_GUARD else Path(name)
        meta = (
            json.loads((folder / "meta.json").read_text())
            if (folder / "meta.json").is_file()
            else {}
        )
        loaded = merged_adapter(meta.get("base", SMOLLM2), folder, name, device)
        return ReadoutGuard(
            TrieBackend(loaded, **budget),
            name=name,
            policy_tokenizer=policy_tokenizer or loaded.tokenizer,
            system=meta.get("system", GUARD_SYSTEM),
            safe_word=meta.get("safe_token", " safe"),
            unsafe_word=meta.get("unsafe_token", " unsafe"),
        )
    if name == LLAMA_GUARD or "/" in name:
        loaded = load_model(name, device=device)
        return SuffixGuard(
            TrieBackend(loaded, **budget),
            name=name,
            policy_tokenizer=policy_tokenizer or loaded.tokenizer,
        )
    raise SaffronError(f"unknown guard {name!r}; known: {', '.join(GUARDS)}, or a local folder")
