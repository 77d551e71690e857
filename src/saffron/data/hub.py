"""Prompt sets that live on the Hugging Face Hub, loaded only when asked for by name.

These are the paper's datasets; they need network (or the user's Hugging Face cache) and, for
the gated one, an accepted licence and a token (``HF_TOKEN`` or ``huggingface-cli login``).
Every failure - offline, gated, missing file, unexpected format - is one
:class:`~saffron.errors.SaffronError` line naming the dataset and what to do. With
``HF_HUB_OFFLINE=1`` nothing is requested from the network: a set is served from the local
Hugging Face cache or fails at once.

* ``harmful-hexphi``: ``Unispac/shallow-vs-deep-safety-alignment-dataset``, file
  ``data/safety_bench/Harmful-HEx-PHI.jsonl``; each line is a chat whose first turn is the
  prompt and second turn a harmful answer (kept as ``reference``, used by prefill attacks).
* ``ai2-refusals``: ``allenai/reward-bench``, split ``filtered``, rows whose ``subset`` starts
  with ``refusals-``; ``prompt`` and ``rejected`` (the compliant answer, kept as ``reference``).
  Reading its parquet files needs ``pyarrow``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from saffron.data.prompts import PromptRow
from saffron.errors import SaffronError

HEXPHI_REPO = "Unispac/shallow-vs-deep-safety-alignment-dataset"
HEXPHI_FILE = "data/safety_bench/Harmful-HEx-PHI.jsonl"
REWARDBENCH_REPO = "allenai/reward-bench"
REWARDBENCH_PATTERN = "data/filtered-*.parquet"

# Seconds to wait for the Hub before giving up (huggingface_hub reads these at request time
# in recent versions; set only when the user has not chosen a value).
_TIMEOUT_ENV = {"HF_HUB_ETAG_TIMEOUT": "10", "HF_HUB_DOWNLOAD_TIMEOUT": "20"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (1, true, yes, on)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection reach the Hub endpoint within ``timeout`` seconds?

    A quick probe so that a machine without network fails in seconds instead of waiting out
    huggingface_hub's retries. Assumed true when an HTTPS proxy is configured (the proxy, not
    this probe, decides then).
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _local_only() -> bool:
    """Serve only from the local Hugging Face cache: offline mode, or the Hub unreachable."""
    return hub_offline() or not _hub_reachable()


def _explain(name: str, repo: str, err: Exception, local_only: bool) -> SaffronError:
    kind = type(err).__name__
    if kind == "GatedRepoError":
        why = (
            f"the dataset is gated: accept its terms at https://huggingface.co/datasets/{repo} "
            "and log in (HF_TOKEN)"
        )
    elif kind in {"LocalEntryNotFoundError", "OfflineModeIsEnabled"} or local_only:
        why = "it is not in the local Hugging Face cache and the Hub cannot be reached (offline)"
    elif kind in {"RepositoryNotFoundError", "EntryNotFoundError", "RemoteEntryNotFoundError"}:
        why = f"the Hub has no such file or repository ({kind})"
    else:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        why = f"{kind}: {first}" if first else kind
    return SaffronError(f"dataset {name!r} needs the Hugging Face Hub ({repo}): {why}")


def _set_timeouts() -> None:
    for key, value in _TIMEOUT_ENV.items():
        os.environ.setdefault(key, value)


def _with_hub(name: str, repo: str, call: Callable[[bool], Any]) -> Any:
    """Run ``call(local_only)``, turning any hub failure into one SaffronError line."""
    local_only = _local_only()
    try:
        return call(local_only)
    except SaffronError:
        raise
    except Exception as e:  # the hub raises many types (HTTP, offline, gated, OS errors)
        raise _explain(name, repo, e, local_only) from None


def _download_file(name: str, repo: str, filename: str) -> Path:
    _set_timeouts()
    from huggingface_hub import hf_hub_download

    def call(local_only: bool) -> str:
        return hf_hub_download(
            repo_id=repo, filename=filename, repo_type="dataset", local_files_only=local_only
        )

    return Path(_with_hub(name, repo, call))


def _download_pattern(name: str, repo: str, pattern: str) -> list[Path]:
    _set_timeouts()
    from huggingface_hub import snapshot_download

    def call(local_only: bool) -> str:
        return snapshot_download(
            repo_id=repo,
            repo_type="dataset",
            allow_patterns=[pattern],
            local_files_only=local_only,
        )

    root = Path(_with_hub(name, repo, call))
    files = sorted(root.glob(pattern))
    if not files:
        raise SaffronError(
            f"dataset {name!r}: the Hub repository {repo} has no files matching {pattern}"
        )
    return files


def _turn_text(turn: Any) -> str | None:
    if isinstance(turn, str):
        return turn
    if isinstance(turn, dict) and isinstance(turn.get("content"), str):
        return str(turn["content"])
    return None


def parse_hexphi(text: str, where: str) -> list[PromptRow]:
    """Rows of a Harmful-HEx-PHI JSONL text: ids ``harmful-hexphi-NNNN`` in line order.

    A line is a chat: a JSON list of turns, or an object holding it under ``chat`` or
    ``messages``; a turn is a string or ``{"content": str, ...}``. Turn 0 is the prompt,
    turn 1 (if present) the harmful answer, kept as ``reference``.
    """
    rows: list[PromptRow] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj: Any = json.loads(line)
        except json.JSONDecodeError as e:
            raise SaffronError(f"{where}:{lineno}: malformed JSON ({e.msg})") from None
        chat = obj
        if isinstance(obj, dict):
            chat = obj.get("chat", obj.get("messages"))
        if not isinstance(chat, list) or not chat or _turn_text(chat[0]) is None:
            raise SaffronError(f"{where}:{lineno}: expected a chat (list of turns)")
        prompt = _turn_text(chat[0]) or ""
        answer = _turn_text(chat[1]) if len(chat) > 1 else None
        if not prompt.strip():
            raise SaffronError(f"{where}:{lineno}: empty prompt")
        rows.append(
            PromptRow(
                id=f"harmful-hexphi-{len(rows) + 1:04d}",
                prompt=prompt,
                reference=answer,
                source="harmful-hexphi",
            )
        )
    return rows


def rewardbench_refusal_rows(records: list[dict[str, Any]]) -> list[PromptRow]:
    """RewardBench records whose ``subset`` starts with ``refusals-``, sorted by their ``id``.

    Ids are ``ai2-refusals-<RewardBench id>`` (stable: RewardBench numbers its rows);
    ``reference`` is the ``rejected`` (compliant) answer, ``category`` the subset.
    """
    picked = [r for r in records if str(r.get("subset", "")).startswith("refusals-")]
    picked.sort(key=lambda r: int(r["id"]))
    return [
        PromptRow(
            id=f"ai2-refusals-{int(r['id'])}",
            prompt=str(r["prompt"]),
            reference=str(r["rejected"]),
            category=str(r["subset"]),
            source="ai2-refusals",
        )
        for r in picked
    ]


def _load_hexphi() -> list[PromptRow]:
    path = _download_file("harmful-hexphi", HEXPHI_REPO, HEXPHI_FILE)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SaffronError(f"{path}: not valid UTF-8") from None
    return parse_hexphi(text, HEXPHI_FILE)


def _load_ai2_refusals() -> list[PromptRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SaffronError(
            "dataset 'ai2-refusals' needs pyarrow to read the Hub's parquet files: "
            "pip install pyarrow"
        ) from None
    records: list[dict[str, Any]] = []
    for f in _download_pattern("ai2-refusals", REWARDBENCH_REPO, REWARDBENCH_PATTERN):
        table = pq.read_table(f, columns=["prompt", "rejected", "subset", "id"])
        records.extend(table.to_pylist())
    return rewardbench_refusal_rows(records)


_LOADERS: dict[str, Callable[[], list[PromptRow]]] = {
    "harmful-hexphi": _load_hexphi,
    "ai2-refusals": _load_ai2_refusals,
}


def load_hub_dataset(name: str) -> list[PromptRow]:
    """Load the Hub set ``name`` (``harmful-hexphi`` or ``ai2-refusals``); see the module doc."""
    return _LOADERS[name]()
