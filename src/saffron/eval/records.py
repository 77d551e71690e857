"""The eval directory: its config, one JSON line per (prompt, method, budget), resumable.

Layout of ``DIR``::

    config.json     the run's configuration; a different config in the same DIR is refused
    prefills.jsonl  the prefill chosen for each prompt (so a resumed run uses the same ones)
    records.jsonl   one object per (prompt_id, method, budget), see docs/formats.md
    metrics.json    written by ``saffron compare`` (and at the end of ``saffron eval``)

Records are appended one whole line per ``write`` call and flushed to disk; a line cut short by
a kill is dropped on the next start (that record is simply run again), so rerunning the same
command resumes without duplicates and loses nothing that was completed. Appends and that
repair hold an exclusive ``flock`` on the file, so several shards of one run (``--shard``) may
write the same directory at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saffron.errors import SaffronError
from saffron.files import append_jsonl, complete_lines, write_json

Key = tuple[str, str, int]


_GRID_KEYS = ("methods", "budgets", "method_budgets", "limit")


def _grid(config: dict[str, Any]) -> dict[str, set[int]]:
    """Each method's budgets under ``config`` (its own budgets, else the common ones)."""
    own = config.get("method_budgets") or {}
    return {m: set(own.get(m) or config.get("budgets") or ()) for m in config.get("methods", ())}


def extends(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` only adds to ``old``: the same settings, and every (method, budget) and
    prompt of ``old`` also in ``new`` (more methods, budgets or prompts). Records are keyed and
    each depends only on its own key and the settings, so ``old``'s records stay valid."""
    if any(old.get(k) != new.get(k) for k in set(old) | set(new) if k not in _GRID_KEYS):
        return False
    new_grid = _grid(new)
    if any(not b <= new_grid.get(m, set()) for m, b in _grid(old).items()):
        return False
    lo, hi = old.get("limit"), new.get("limit")
    return hi is None or (lo is not None and hi >= lo)


def claim_dir(out: Path, config: dict[str, Any]) -> None:
    """Create ``out`` with ``config``, or accept it if it holds the same config, one that
    ``config`` :func:`extends` (then ``config.json`` becomes ``config``; the run grows), or one
    that extends ``config`` (a part of the run; nothing changes).

    Raises SaffronError, before anything is written, when ``out`` holds another run.
    """
    path = out / "config.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise SaffronError(f"{path} is not valid JSON; use another --out") from None
        if extends(config, old):  # the same run, or a part of it: resume, keep its config
            return
        if extends(old, config):  # the run grows
            write_json(path, config, sort_keys=True)
            return
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        raise SaffronError(
            f"{out} holds a run with another config (differs in: {', '.join(diff)}); "
            "use another --out, the same options, or options that only add methods, "
            "budgets or prompts"
        )
    if out.exists() and any(out.iterdir()):
        raise SaffronError(f"{out} is not empty and holds no Saffron run; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, config, sort_keys=True)


class JsonlLog:
    """An append-only JSON-lines file whose complete lines survive a kill."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            keep = complete_lines(path)  # another shard may be appending right now
            for lineno, line in enumerate(keep.decode("utf-8").splitlines(), start=1):
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise SaffronError(f"{path}:{lineno}: corrupt record; remove it") from None

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one line (locked, synced) and keep it in :attr:`rows`."""
        append_jsonl(self.path, [row], sort_keys=True)
        self.rows.append(row)


def record_key(row: dict[str, Any]) -> Key:
    return (str(row["prompt_id"]), str(row["method"]), int(row["budget"]))


def load_records(out: Path) -> list[dict[str, Any]]:
    path = out / "records.jsonl"
    if not path.is_file():
        raise SaffronError(f"{out} holds no records.jsonl; run `saffron eval --out {out}` first")
    return JsonlLog(path).rows
