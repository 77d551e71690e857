"""``saffron label``: the token-level reward dataset (our "Safety4M"; paper, Partial supervision).

For every (prompt, response) of a corpus (:mod:`saffron.train.corpus`) and every prefix
``response[: j + 1]`` — the last one ending with EOS when the response ended — the guard's
process reward r_j = R(prompt, response[: j + 1]) from :meth:`Guard.score_prefixes`.

Format (``LABEL_FORMAT`` = ``saffron-token-rewards/1``), a folder:

* ``meta.json`` — ``format``, ``guard``, ``policy``, ``policy_vocab_hash`` (sha256 of the sorted
  (token, id) pairs, :func:`saffron.lm.vocab.vocab_hash`), ``vocab_size``, ``corpus`` (path),
  ``corpus_sha256``, ``count`` (items), ``shard_size``, ``max_prompt_tokens``, ``shards``,
  ``dtype`` (the guard's), ``complete``; rewritten atomically.
* ``shard-00000.safetensors`` … — items ``[k·shard_size, (k+1)·shard_size)`` of the corpus, in
  corpus order. Tensors: ``prompt_tokens`` int32 (flat), ``prompt_offsets`` int64 (n+1),
  ``response_tokens`` int32 (flat), ``response_offsets`` int64 (n+1), ``rewards`` float32
  (aligned with ``response_tokens``), ``harmful`` uint8 (n). Metadata (strings): ``ids`` and
  ``kinds`` (JSON lists; kind is the corpus item's source kind). Item i's response is
  ``response_tokens[response_offsets[i] : response_offsets[i+1]]``, and so on.

Token ids are the POLICY's. Each shard is written to a temporary file and renamed, so a shard
exists whole or not at all; a rerun keeps every valid shard and computes only the missing ones.
A corrupt shard is reported by name and left alone.

Shards are labelled in this process, or on Ray workers (``saffron label --ray``,
:func:`cluster_labeller`) that each hold a copy of the guard and return a shard's items; this
process writes every file either way. Labels do not depend on where a shard ran: the guard's
cache is cleared after every batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from saffron.cluster import ClusterConfig, Workers
from saffron.errors import SaffronError
from saffron.files import read_format, sha256_file, write_json, write_with
from saffron.lm.batching import batches
from saffron.lm.models import (
    EMBEDDED_POLICIES,
    SMOLLM2,
    TINY,
    byte_tokenizer,
    ensure_smollm2,
    is_adapter_folder,
)
from saffron.lm.vocab import vocab_hash
from saffron.reward.base import Guard
from saffron.runtime import CPU, RuntimeConfig
from saffron.train.corpus import CorpusItem, read_corpus
from saffron.types import TokenSequence

LABEL_FORMAT = "saffron-token-rewards/1"
META = "meta.json"
_ARRAYS = ("prompt_tokens", "prompt_offsets", "response_tokens", "response_offsets", "rewards")


@dataclass(frozen=True)
class LabelConfig:
    """Settings of ``saffron label``."""

    shard_size: int = 256
    """Corpus items per shard file."""
    batch_size: int = 16
    """Items per guard call."""
    max_prompt_tokens: int = 256
    """Longer prompts are cut to this many tokens (recorded in meta)."""

    def __post_init__(self) -> None:
        if min(self.shard_size, self.batch_size, self.max_prompt_tokens) < 1:
            raise SaffronError("shard size, batch size and max prompt tokens must be positive")


@dataclass(frozen=True)
class LabelledItem:
    """One labelled response: policy token ids and the guard's reward after each token."""

    id: str
    kind: str
    harmful: bool
    prompt: tuple[int, ...]
    response: tuple[int, ...]
    rewards: np.ndarray  # (len(response),) float32

    def sequence(self) -> TokenSequence:
        """As a sequence a reward model reads (no template, no prefill: those are theirs)."""
        return TokenSequence((), self.prompt, (), (), self.response)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model name, without loading its weights (a trained policy such as
    ``smol-aligned`` has its base's tokenizer)."""
    if name in EMBEDDED_POLICIES or is_adapter_folder(name):
        from saffron.lm.adapters import policy_base  # adapters loads models; only here

        return load_tokenizer(policy_base(name))
    if name == TINY:
        return byte_tokenizer()
    path = str(ensure_smollm2()) if name == SMOLLM2 else name
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise SaffronError(f"could not load the tokenizer of {name!r}: {err}") from err


# --- shards -----------------------------------------------------------------------------------


def shard_path(folder: Path, k: int) -> Path:
    return folder / f"shard-{k:05d}.safetensors"


def _flat(rows: list[tuple[int, ...]] | list[np.ndarray], dtype: type) -> tuple[np.ndarray, ...]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    flat = np.concatenate([np.asarray(r, dtype=dtype) for r in rows]) if rows else np.zeros(0)
    return flat.astype(dtype), offsets


def write_shard(path: Path, items: list[LabelledItem]) -> None:
    """Write ``items`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    p_tok, p_off = _flat([it.prompt for it in items], np.int32)
    r_tok, r_off = _flat([it.response for it in items], np.int32)
    rewards, _ = _flat([it.rewards for it in items], np.float32)
    arrays = {
        "prompt_tokens": p_tok,
        "prompt_offsets": p_off,
        "response_tokens": r_tok,
        "response_offsets": r_off,
        "rewards": rewards,
        "harmful": np.array([it.harmful for it in items], dtype=np.uint8),
    }
    meta = {
        "ids": json.dumps([it.id for it in items]),
        "kinds": json.dumps([it.kind for it in items]),
    }
    write_with(path, lambda tmp: save_file(arrays, str(tmp), metadata=meta))


def read_shard(path: Path) -> list[LabelledItem]:
    """Items of one shard; SaffronError naming the file when it is corrupt or inconsistent."""
    try:
        with safe_open(str(path), "np") as fh:
            meta = fh.metadata() or {}
            arr = {k: fh.get_tensor(k) for k in (*_ARRAYS, "harmful")}
        ids, kinds = json.loads(meta["ids"]), json.loads(meta["kinds"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, ValueError) as err:
        raise SaffronError(f"label shard {path} is corrupt ({err}); delete it to redo it") from err
    n = len(ids)
    p_off, r_off = arr["prompt_offsets"], arr["response_offsets"]
    if not (
        len(kinds) == n == len(arr["harmful"]) == len(p_off) - 1 == len(r_off) - 1
        and p_off[-1] == len(arr["prompt_tokens"])
        and r_off[-1] == len(arr["response_tokens"]) == len(arr["rewards"])
    ):
        raise SaffronError(f"label shard {path} is corrupt (inconsistent sizes); delete it")
    p_tok, r_tok, rew = arr["prompt_tokens"], arr["response_tokens"], arr["rewards"]
    return [
        LabelledItem(
            id=ids[i],
            kind=kinds[i],
            harmful=bool(arr["harmful"][i]),
            prompt=tuple(int(t) for t in p_tok[p_off[i] : p_off[i + 1]]),
            response=tuple(int(t) for t in r_tok[r_off[i] : r_off[i + 1]]),
            rewards=rew[r_off[i] : r_off[i + 1]].astype(np.float32),
        )
        for i in range(n)
    ]


# --- the dataset ------------------------------------------------------------------------------


def read_meta(folder: Path) -> dict[str, object]:
    """The ``meta.json`` of a label dataset; SaffronError when absent, corrupt or another
    format."""
    path = folder / META
    if not path.is_file():
        raise SaffronError(f"{folder} is not a label dataset (no {META}); run `saffron label`")
    return read_format(path, LABEL_FORMAT, unreadable="{path} is corrupt", kind="dataset")


_IDENTITY = (
    "format",
    "guard",
    "guard_weights",
    "policy_vocab_hash",
    "corpus_sha256",
    "count",
    "shard_size",
    "max_prompt_tokens",
    "dtype",
)
_IDENTITY_DEFAULTS = {"dtype": "float32"}  # labels made before the key existed
# labels the given parts; yields (index into the parts, that part's items) in any order
PartLabeller = Callable[[list[list[CorpusItem]]], Iterator[tuple[int, list[LabelledItem]]]]


def label_items(
    guard: Guard,
    items: list[CorpusItem],
    encode: Callable[[str], list[int]],
    cfg: LabelConfig,
) -> list[LabelledItem]:
    """Label ``items`` with ``guard``, ``cfg.batch_size`` per call; the guard's cache is
    cleared after each call (items share nothing but a template, and memory stays bounded)."""
    out: list[LabelledItem] = []
    for batch in batches(items, cfg.batch_size):
        prompts = [tuple(encode(it.prompt))[: cfg.max_prompt_tokens] for it in batch]
        seqs = [
            TokenSequence((), p, (), tuple(it.prefill_tokens), tuple(it.response_tokens))
            for p, it in zip(prompts, batch, strict=True)
        ]
        rewards = guard.score_prefixes(seqs)
        guard.backend.clear()
        for it, s, r in zip(batch, seqs, rewards, strict=True):
            values = r.detach().float().cpu().numpy().reshape(-1)
            out.append(LabelledItem(it.id, it.kind, it.harmful, s.prompt, s.generated, values))
    return out


def label_corpus(
    guard: Guard | None,
    policy_tokenizer: PreTrainedTokenizerBase,
    corpus_path: Path,
    out_dir: Path,
    cfg: LabelConfig,
    *,
    guard_name: str,
    policy_name: str,
    guard_weights: str | None = None,
    dtype: str = "float32",
    label_parts: PartLabeller | None = None,
) -> dict[str, object]:
    """Label (or finish labelling) ``corpus_path`` into ``out_dir``; return the metadata.

    ``guard_weights`` is a fingerprint of the guard's weights
    (:func:`saffron.reward.loading.fingerprint`), so a guard retrained under the same name
    does not resume labels made by the old one; nor does a guard run in another ``dtype``.
    ``label_parts`` labels the missing shards elsewhere (:func:`cluster_labeller`; ``guard``
    may then be None), else ``guard`` labels them here. Refuses an empty corpus, an
    ``out_dir`` built from another corpus/guard/weights/tokenizer/config, and a corrupt shard —
    each before writing anything.
    """
    if not corpus_path.is_file():
        raise SaffronError(f"corpus file {corpus_path} does not exist")
    items = read_corpus(corpus_path)
    if not items:
        raise SaffronError(f"corpus file {corpus_path} is empty; nothing to label")
    names = {"guard": guard_name, "guard_weights": guard_weights, "policy": policy_name}
    meta = _meta(names, policy_tokenizer, corpus_path, len(items), cfg) | {"dtype": dtype}
    done = _resumable(out_dir, meta, items, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / META, meta)
    todo = [k for k in range(int(str(meta["shards"]))) if k not in set(done)]
    parts = [items[k * cfg.shard_size : (k + 1) * cfg.shard_size] for k in todo]
    if label_parts is None:
        if guard is None:
            raise ValueError("label_corpus needs a guard or label_parts")
        label_parts = partial(_label_here, guard, _encoder(policy_tokenizer), cfg)
    t0 = time.perf_counter()
    with tqdm(total=len(items), initial=len(items) - _count(todo, cfg, items), desc="label") as bar:
        for i, labelled in label_parts(parts):
            write_shard(shard_path(out_dir, todo[i]), labelled)
            bar.update(len(parts[i]))
    meta.update(complete=True, label_seconds=round(time.perf_counter() - t0, 1))
    write_json(out_dir / META, meta)
    return meta


def _meta(
    names: dict[str, str | None],
    policy_tokenizer: PreTrainedTokenizerBase,
    corpus_path: Path,
    count: int,
    cfg: LabelConfig,
) -> dict[str, object]:
    """The dataset's ``meta.json`` before labelling (``complete`` False); ``names`` holds
    ``guard``, ``guard_weights`` and ``policy``."""
    return {
        "format": LABEL_FORMAT,
        "guard": names["guard"],
        "guard_weights": names["guard_weights"],
        "policy": names["policy"],
        "policy_vocab_hash": vocab_hash(policy_tokenizer),
        "vocab_size": len(policy_tokenizer),
        "corpus": str(corpus_path),
        "corpus_sha256": sha256_file(corpus_path),
        "count": count,
        "shard_size": cfg.shard_size,
        "max_prompt_tokens": cfg.max_prompt_tokens,
        "shards": -(-count // cfg.shard_size),
        "complete": False,
    }


def _resumable(
    out_dir: Path, meta: dict[str, object], items: list[CorpusItem], cfg: LabelConfig
) -> list[int]:
    """The shards already in ``out_dir`` that a run with ``meta`` keeps, each validated;
    SaffronError when ``out_dir`` holds labels of another identity or a shard that does not
    match the corpus (before anything is written)."""
    if (out_dir / META).is_file():
        old = read_meta(out_dir)
        diff = [k for k in _IDENTITY if old.get(k, _IDENTITY_DEFAULTS.get(k)) != meta[k]]
        if diff:
            raise SaffronError(
                f"{out_dir} holds labels made with a different {', '.join(diff)}; "
                "choose another --out or delete it"
            )
    done = [k for k in range(int(str(meta["shards"]))) if shard_path(out_dir, k).is_file()]
    for k in done:
        ids = [it.id for it in read_shard(shard_path(out_dir, k))]
        want = [it.id for it in items[k * cfg.shard_size : (k + 1) * cfg.shard_size]]
        if ids != want:
            raise SaffronError(f"label shard {shard_path(out_dir, k)} does not match the corpus")
    return done


def _count(todo: list[int], cfg: LabelConfig, items: list[CorpusItem]) -> int:
    return sum(len(items[k * cfg.shard_size : (k + 1) * cfg.shard_size]) for k in todo)


def read_labels(folder: Path) -> tuple[dict[str, object], list[LabelledItem]]:
    """The metadata and every item of a complete label dataset, in corpus order."""
    meta = read_meta(folder)
    if not meta.get("complete"):
        raise SaffronError(f"the labels in {folder} are incomplete; rerun `saffron label`")
    items: list[LabelledItem] = []
    for k in range(int(str(meta["shards"]))):
        path = shard_path(folder, k)
        if not path.is_file():
            raise SaffronError(f"label shard {path} is missing; rerun `saffron label`")
        items.extend(read_shard(path))
    if len(items) != meta["count"]:
        raise SaffronError(
            f"the labels in {folder} hold {len(items)} items, meta says {meta['count']}"
        )
    return meta, items


def read_label_sets(folders: list[Path]) -> tuple[dict[str, object], list[LabelledItem]]:
    """Several complete label datasets as one (e.g. the corpus's and the search-visited
    states', :mod:`saffron.train.visited`): items in folder order, the first folder's metadata
    with ``count`` summed and ``folders`` added.

    Raises SaffronError when the folders were labelled by different guards or guard weights,
    for different policy vocabularies, or share an item id (the same corpus labelled twice).
    """
    if not folders:
        raise SaffronError("no label folder given")
    meta, items = read_labels(folders[0])
    ids = {it.id for it in items}
    for folder in folders[1:]:
        other, more = read_labels(folder)
        for key in ("guard", "guard_weights", "policy_vocab_hash"):
            if other.get(key) != meta.get(key):
                raise SaffronError(
                    f"the labels in {folder} differ from those in {folders[0]} in {key} "
                    f"({other.get(key)} vs {meta.get(key)}); label both with the same guard"
                )
        twice = ids & {it.id for it in more}
        if twice:
            raise SaffronError(
                f"the labels in {folder} repeat {len(twice)} item(s) of an earlier folder "
                f"(e.g. {min(twice)})"
            )
        ids |= {it.id for it in more}
        items += more
    return {**meta, "count": len(items), "folders": [f.name for f in folders]}, items


# --- where shards are labelled ----------------------------------------------------------------


def _encoder(tokenizer: PreTrainedTokenizerBase) -> Callable[[str], list[int]]:
    return lambda text: list(tokenizer.encode(text, add_special_tokens=False))


def _label_here(
    guard: Guard,
    encode: Callable[[str], list[int]],
    cfg: LabelConfig,
    parts: list[list[CorpusItem]],
) -> Iterator[tuple[int, list[LabelledItem]]]:
    for i, part in enumerate(parts):
        yield i, label_items(guard, part, encode, cfg)


def policy_guard(guard: str, policy: str, runtime: RuntimeConfig = CPU) -> Guard:
    """The guard ``guard`` reading the token ids of ``policy``'s tokenizer, loaded with
    ``runtime``: what each Ray worker of ``saffron label --ray`` builds."""
    from saffron.reward.loading import load_guard

    return load_guard(guard, load_tokenizer(policy), runtime=runtime)


class LabelWorker:
    """One process's guard (``make_guard()``, after ``runtime`` is applied) and the policy
    tokenizer that encodes the corpus prompts."""

    def __init__(
        self,
        make_guard: Callable[[], Guard],
        policy: str,
        cfg: LabelConfig,
        runtime: RuntimeConfig = CPU,
    ) -> None:
        runtime.apply()
        self.guard, self.cfg = make_guard(), cfg
        self.encode = _encoder(load_tokenizer(policy))

    def label(self, part: list[CorpusItem]) -> list[LabelledItem]:
        return label_items(self.guard, part, self.encode, self.cfg)


@contextmanager
def cluster_labeller(
    cluster: ClusterConfig,
    make_guard: Callable[[], Guard],
    policy: str,
    cfg: LabelConfig,
    runtime: RuntimeConfig = CPU,
) -> Iterator[PartLabeller]:
    """A :data:`PartLabeller` on ``cluster.workers`` Ray workers, each a :class:`LabelWorker`
    (``make_guard`` picklable, e.g. ``functools.partial(policy_guard, …)``); the workers start
    on entry and stop on exit."""
    with Workers(cluster, partial(LabelWorker, make_guard, policy, cfg, runtime)) as workers:
        yield lambda parts: workers.map("label", [(p,) for p in parts])
