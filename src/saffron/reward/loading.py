"""Loading guards by name: the embedded ``smol-guard``, the independent ``gemma-judge``,
Llama Guard 3, or a local folder."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from saffron.errors import SaffronError
from saffron.lm.adapters import merged_adapter
from saffron.lm.backend import TrieBackend
from saffron.lm.models import SMOLLM2, load_model
from saffron.paths import artifacts_dir
from saffron.reward.base import Guard
from saffron.reward.guard import GUARD_SYSTEM, ReadoutGuard, SuffixGuard
from saffron.reward.independent import GEMMA_JUDGE, is_judge_folder, load_judge
from saffron.runtime import CPU, RuntimeConfig

ARTIFACTS = artifacts_dir()
SMOL_GUARD = "smol-guard"
SMOL_GUARD_ALIGNED = "smol-guard-aligned"
# the guard of the default (aligned) world: Best-of-N's reward, smol-mrm's backbone, the labeller
DEFAULT_GUARD = SMOL_GUARD_ALIGNED
LLAMA_GUARD = "meta-llama/Llama-Guard-3-1B"
GUARDS = {
    SMOL_GUARD: "SmolLM2-135M + LoRA trained by Saffron (embedded, offline), reads every position",
    SMOL_GUARD_ALIGNED: "the same, trained on the aligned world (`train-guard --world aligned`: "
    "the aligned policies' answers, the gold train part and human rows; embedded, offline)",
    GEMMA_JUDGE: "the independent judge: Gemma 3 270M + LoRA trained on human-read labels only "
    "(embedded, offline; reads text; Gemma Terms of Use)",
    LLAMA_GUARD: "Llama Guard 3 1B (the paper's guard; gated, online)",
}


def adapter_dir(name: str) -> Path:
    return ARTIFACTS / name


def load_guard(
    name: str,
    policy_tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    runtime: RuntimeConfig = CPU,
) -> Guard:
    """A guard by name: ``smol-guard``, ``smol-guard-aligned``, ``gemma-judge``,
    ``meta-llama/Llama-Guard-3-1B``, or a
    local folder holding a smol-guard-style adapter (``adapter_config.json`` + ``meta.json``) or
    a judge written by ``saffron train-judge`` (its meta says ``kind: judge``).

    ``policy_tokenizer`` is the tokenizer of the token ids the guard will be given (default: the
    guard's own). ``runtime``: the device and dtype of the guard's network and its trie's byte
    budget; the verdicts come back in float32.
    """
    if is_judge_folder(name):
        return load_judge(name, policy_tokenizer, runtime=runtime)
    embedded = name in (SMOL_GUARD, SMOL_GUARD_ALIGNED)
    if embedded or (Path(name) / "meta.json").is_file():
        folder = adapter_dir(name) if embedded else Path(name)
        meta = (
            json.loads((folder / "meta.json").read_text())
            if (folder / "meta.json").is_file()
            else {}
        )
        loaded = merged_adapter(
            meta.get("base", SMOLLM2), folder, name, trainer="train-guard", runtime=runtime
        )
        return ReadoutGuard(
            TrieBackend(loaded, max_bytes=runtime.kv_budget),
            name=name,
            policy_tokenizer=policy_tokenizer or loaded.tokenizer,
            system=meta.get("system", GUARD_SYSTEM),
            safe_word=meta.get("safe_token", " safe"),
            unsafe_word=meta.get("unsafe_token", " unsafe"),
        )
    if name == LLAMA_GUARD or "/" in name:
        loaded = load_model(name, runtime)
        return SuffixGuard(
            TrieBackend(loaded, max_bytes=runtime.kv_budget),
            name=name,
            policy_tokenizer=policy_tokenizer or loaded.tokenizer,
        )
    raise SaffronError(f"unknown guard {name!r}; known: {', '.join(GUARDS)}, or a local folder")
