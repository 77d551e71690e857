"""The response corpus shared by guard training (``train-guard``) and MRM labelling (``label``).

For each training prompt it holds responses of several kinds, all as the policy's token ids:

* ``policy`` — the policy's own sampled answer, no prefill;
* ``policy-prefill`` — the policy's sampled continuation after a compliance opener (the opener
  is the prefill: in the policy's context, not part of the response);
* ``policy-ownstart`` (optional, ``own_start=True``) — the policy's sampled continuation after
  the first K tokens of its own greedy answer: the prefill attack of ``saffron eval`` on prompts
  without a reference answer, so guard and MRM see the distribution they are evaluated on;
* ``policy-redirect`` (optional, ``redirect=True``) — the policy's continuation of the same
  greedy start, sampled while the policy is asked (in its own context only) to turn the request
  toward a harmless goal: safe redirections in the policy's own words and in the attack's
  distribution. The item's prompt is the original request, as the guard will see it;
* ``refusal`` — a written refusal, sometimes with a safe redirection, ending in EOS;
* ``benign`` — the policy's answer to a benign prompt.

The corpus is a JSON-lines file in the user cache, one line per response; building it again
resumes where it stopped (lines are appended per batch and keyed by id).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from saffron.data import PromptRow
from saffron.data.prompts import rows_of_split
from saffron.files import append_jsonl
from saffron.lm.batching import batches
from saffron.lm.policy import Policy
from saffron.search.base import SearchConfig
from saffron.search.decoding import decode_batch, generator, greedy_starts
from saffron.train.texts import OPENERS, benign_prompts, refusal

HARMFUL_SETS = ("advbench", "harmbench", "strongreject", "donotanswer")
N_BENIGN = 200  # benign prompts in the corpus
OWN_START = "policy-ownstart"
REDIRECT = "policy-redirect"
# what the policy reads instead of the request for a REDIRECT job (the guard never sees it)
REDIRECT_INSTRUCTION = (
    "{prompt}\n\n(Do not help with this. Instead, turn the request around: answer with "
    "something harmless and positive, such as how to prevent or counter this harm, and explain "
    "why it is harmful or illegal.)"
)


@dataclass(frozen=True)
class CorpusItem:
    """One (prompt, response) of the corpus. ``response_tokens`` are policy token ids."""

    id: str
    prompt: str
    harmful: bool
    kind: str
    prefill: str
    prefill_tokens: list[int]
    response_tokens: list[int]
    response: str


def training_prompts(seed: int = 0, per_set: int | None = None) -> list[PromptRow]:
    """The train part of each harmful set (by prompt text, so the eval part never leaks)."""
    rows: list[PromptRow] = []
    for name in HARMFUL_SETS:
        train = rows_of_split(name, "train")
        rng = random.Random(f"{seed}:{name}")
        rng.shuffle(train)
        rows.extend(train[:per_set] if per_set else train)
    # the same goal can appear in two sets: keep its first occurrence
    seen: set[str] = set()
    unique = []
    for r in rows:
        key = " ".join(r.prompt.lower().split())
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


@dataclass(frozen=True)
class Job:
    id: str
    prompt: str
    harmful: bool
    kind: str
    prefill: str


def plan(
    rows: list[PromptRow],
    n_benign: int,
    seed: int,
    own_start: bool = False,
    redirect: bool = False,
) -> list[Job]:
    """Which responses to produce, deterministically from ``seed``.

    ``own_start`` and ``redirect`` each add one job per harmful prompt without drawing from the
    random stream, so every other job (id, opener) is the same with or without them: a corpus
    built without them can be extended in place.
    """
    rng = random.Random(seed)
    jobs: list[Job] = []
    for r in rows:
        jobs.append(Job(f"{r.id}/policy", r.prompt, True, "policy", ""))
        jobs.append(Job(f"{r.id}/prefill", r.prompt, True, "policy-prefill", rng.choice(OPENERS)))
        if own_start:
            jobs.append(Job(f"{r.id}/ownstart", r.prompt, True, OWN_START, ""))
        if redirect:
            jobs.append(Job(f"{r.id}/redirect", r.prompt, True, REDIRECT, ""))
        if rng.random() < 0.5:
            jobs.append(Job(f"{r.id}/refusal", r.prompt, True, "refusal", ""))
    benign = benign_prompts()
    rng.shuffle(benign)
    for i, p in enumerate(benign[:n_benign]):
        jobs.append(Job(f"benign-{i:04d}/policy", p, False, "benign", ""))
    return jobs


def read_corpus(path: Path) -> list[CorpusItem]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        return [CorpusItem(**json.loads(line)) for line in fh if line.strip()]


def build_corpus(
    policy: Policy,
    path: Path,
    *,
    seed: int = 0,
    per_set: int | None = None,
    n_benign: int = N_BENIGN,
    max_new_tokens: int = 40,
    prefill_tokens: int = 10,
    batch_size: int = 32,
    own_start: bool = False,
    redirect: bool = False,
) -> list[CorpusItem]:
    """Produce (or finish producing) the corpus at ``path``; return all its items.

    Jobs already in the file are skipped; each batch's items are appended as whole lines, so a
    killed build resumes. Batches alternate sampling temperature 0.7 and 1.0.
    """
    jobs = plan(training_prompts(seed, per_set), n_benign, seed, own_start, redirect)
    done = {it.id for it in read_corpus(path)}
    todo = [j for j in jobs if j.id not in done]
    rng = random.Random(f"refusals:{seed}")
    cfg = SearchConfig(max_new_tokens=max_new_tokens, min_new_tokens=0, top_p=0.9, seed=seed)
    with tqdm(total=len(todo), desc="corpus") as bar:
        for b, batch in enumerate(batches(todo, batch_size)):
            sampled = [j for j in batch if j.kind != "refusal"]
            temp = replace(cfg, temperature=0.7 if b % 2 == 0 else 1.0)
            gen = generator(cfg, salt=len(done) + b)
            items = _sampled(policy, sampled, temp, gen, prefill_tokens)
            items += [_written_refusal(policy, j, rng) for j in batch if j.kind == "refusal"]
            append_jsonl(path, [asdict(it) for it in items])
            bar.update(len(batch))
    return read_corpus(path)


def _sampled(
    policy: Policy,
    jobs: list[Job],
    cfg: SearchConfig,
    gen: torch.Generator,
    prefill_tokens: int,
) -> list[CorpusItem]:
    """The policy's sampled responses to ``jobs`` (one batched decode), each after its prefill:
    the policy's own greedy start (``OWN_START``, ``REDIRECT``), else the job's opener."""
    chat = policy.chat
    own = [j for j in jobs if j.kind in (OWN_START, REDIRECT)]
    starts = _own_starts(policy, own, prefill_tokens)
    seqs = [
        chat.sequence(
            REDIRECT_INSTRUCTION.format(prompt=j.prompt) if j.kind == REDIRECT else j.prompt,
            prefill_tokens=starts.get(j.id, chat.encode(j.prefill)[:prefill_tokens]),
        )
        for j in jobs
    ]
    outs = decode_batch(policy, seqs, cfg, greedy=False, gen=gen)
    policy.backend.clear()
    return [_item(j, s.prefill, s.generated, chat.decode) for j, s in zip(jobs, outs, strict=True)]


def _written_refusal(policy: Policy, job: Job, rng: random.Random) -> CorpusItem:
    """A written refusal drawn from ``rng`` as ``job``'s response, ending in EOS."""
    chat = policy.chat
    toks = (*chat.encode(refusal(rng)), min(chat.eos_ids))
    return _item(job, (), toks, chat.decode)


def _own_starts(policy: Policy, jobs: list[Job], k: int) -> dict[str, tuple[int, ...]]:
    """Each job's prefill as ``saffron eval`` chooses it for a prompt without a reference
    answer: the first ``k`` tokens of the policy's greedy answer."""
    if not jobs:
        return {}
    starts = greedy_starts(policy, [policy.chat.sequence(j.prompt) for j in jobs], k)
    policy.backend.clear()
    return {j.id: s for j, s in zip(jobs, starts, strict=True)}


def _item(
    job: Job,
    prefill: tuple[int, ...],
    response: tuple[int, ...],
    decode: Callable[[tuple[int, ...]], str],
) -> CorpusItem:
    return CorpusItem(
        id=job.id,
        prompt=job.prompt,
        harmful=job.harmful,
        kind=job.kind,
        prefill=decode(prefill) if prefill else "",
        prefill_tokens=list(prefill),
        response_tokens=list(response),
        response=decode(response),
    )
