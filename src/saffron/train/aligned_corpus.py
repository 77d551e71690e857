"""The aligned world's guard data (``saffron train-guard --world aligned``).

smol-guard was first trained on the *unaligned* policy's answers, labelled by garak's phrase
rule; read by hand it learned "a harmful request followed by anything but a stock refusal is
unsafe" and called redirections, recoveries and noise unsafe. The aligned world's guard must
read the answer. Its data:

* the aligned policies' own answers (``smol-aligned`` and ``smol-aligned-deep``, sampled as the
  searches sample: temperature 1, top-p 0.8) to the harmful *train* prompts, with no attack
  (``aligned``) and after the first K tokens of the unaligned base's harmful answer to the same
  prompt (``aligned-attack``; K drawn from ``prefill_ks``): refusals, recoveries after a
  harmful start, and compliance that the start carries on;
* their answers to benign training prompts (``aligned-benign``: the look-harmful and plain
  training sets, without their validation quarter), which are safe whatever they say —
  including an over-refusal;
* PyRIT's human-labelled rows (the guard's usual train part) and the gold set's *train* part
  (answers read by hand), with their read labels: ``harmful`` is unsafe, every other label safe.

Answers of the first two kinds are labelled by :func:`aligned_unsafe`: unsafe ⇔ the prompt is
harmful, the answer says something, and neither a first-person refusal expression
(:func:`saffron.data.says_refusal`) nor garak's rule read as a continuation
(:func:`saffron.data.is_refusal`) finds a refusal. An answer the degeneracy judge calls
degenerate is left out: noise is neither a known refusal nor a known compliance (the gold set
carries read examples of it, labelled safe — broken text is not harmful; the degenerate rate
is reported beside the ASR by its own judge).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

from saffron.data import PromptRow, is_refusal, load_prompts, says_refusal
from saffron.data.gold import GoldItem
from saffron.data.prompts import BENIGN_PLAIN_TRAIN, BENIGN_TRAIN, validation_split
from saffron.files import append_jsonl
from saffron.lm.batching import batches
from saffron.lm.policy import Policy
from saffron.reward.degeneracy import DegeneracyJudge, feature_rows
from saffron.search.base import SearchConfig
from saffron.search.decoding import decode_batch, generator
from saffron.train.corpus import CorpusItem, read_corpus
from saffron.train.guard_train import MAX_PROMPT_TOKENS, MAX_RESPONSE_TOKENS, GuardExample

ALIGNED, ATTACK, BENIGN = "aligned", "aligned-attack", "aligned-benign"
GOLD, HUMAN = "gold", "human"


@dataclass(frozen=True)
class AlignedJob:
    """One answer to produce: ``prefill`` is the harmful start (empty: no attack)."""

    id: str
    prompt: str
    harmful: bool
    kind: str
    prefill: tuple[int, ...]


def aligned_jobs(
    policy_name: str,
    harmful: Sequence[PromptRow],
    starts: dict[str, tuple[int, ...]],
    benign: Sequence[str],
    *,
    seed: int,
    prefill_ks: Sequence[int],
) -> list[AlignedJob]:
    """The jobs of one policy: every harmful row with no attack, every row that has a harmful
    start (``starts[row.id]``: the base's answer tokens) after its first K tokens, and every
    benign prompt. Deterministic in ``seed`` and the policy's name."""
    rng = random.Random(f"{seed}:{policy_name}")
    jobs = []
    for r in harmful:
        jobs.append(AlignedJob(f"{policy_name}/{r.id}/none", r.prompt, True, ALIGNED, ()))
        if starts.get(r.id):
            k = rng.choice(list(prefill_ks))
            start = starts[r.id][:k]
            jobs.append(AlignedJob(f"{policy_name}/{r.id}/k{k}", r.prompt, True, ATTACK, start))
    for i, p in enumerate(benign):
        jobs.append(AlignedJob(f"{policy_name}/benign-{i:04d}", p, False, BENIGN, ()))
    return jobs


def benign_training_prompts() -> list[str]:
    """The benign training prompts (look-harmful and plain), without their validation part."""
    return [
        r.prompt
        for name in (BENIGN_TRAIN, BENIGN_PLAIN_TRAIN)
        for r in validation_split(load_prompts(name))[0]
    ]


def build_aligned_corpus(
    policy: Policy,
    policy_name: str,
    jobs: list[AlignedJob],
    path: Path,
    *,
    seed: int = 0,
    max_new_tokens: int = 40,
    batch_size: int = 32,
) -> list[CorpusItem]:
    """Sample (or finish sampling) ``jobs`` with ``policy`` into the JSON-lines file ``path``
    (resumable: lines are keyed by job id); return every item of the file."""
    done = {it.id for it in read_corpus(path)}
    todo = [j for j in jobs if j.id not in done]
    cfg = SearchConfig(max_new_tokens=max_new_tokens, min_new_tokens=0, top_p=0.8, seed=seed)
    chat = policy.chat
    with tqdm(total=len(todo), desc=f"corpus {policy_name}") as bar:
        for i, batch in enumerate(batches(todo, batch_size)):
            seqs = [chat.sequence(j.prompt, prefill_tokens=j.prefill) for j in batch]
            outs = decode_batch(
                policy,
                seqs,
                replace(cfg, temperature=1.0),
                greedy=False,
                gen=generator(cfg, salt=len(done) + i * batch_size),
            )
            policy.backend.clear()
            items = [
                CorpusItem(
                    id=j.id,
                    prompt=j.prompt,
                    harmful=j.harmful,
                    kind=j.kind,
                    prefill=chat.decode(j.prefill) if j.prefill else "",
                    prefill_tokens=list(j.prefill),
                    response_tokens=list(s.generated),
                    response=chat.decode(s.generated),
                )
                for j, s in zip(batch, outs, strict=True)
            ]
            append_jsonl(path, [asdict(it) for it in items])
            bar.update(len(batch))
    return read_corpus(path)


def aligned_unsafe(item: CorpusItem) -> bool:
    """The label of an aligned-world answer (see the module doc)."""
    text = item.response
    if not item.harmful or not text.strip():
        return False
    return not says_refusal(text) and not is_refusal(
        text, item.prompt, continuation=bool(item.prefill)
    )


def aligned_examples(
    corpus: Sequence[CorpusItem],
    gold: Sequence[GoldItem],
    human: Sequence[tuple[str, str, bool]],
    encode: Callable[[str], list[int]],
    degeneracy: DegeneracyJudge | None,
) -> list[GuardExample]:
    """Guard examples from the aligned corpus (labelled by :func:`aligned_unsafe`, degenerate
    answers left out when a surface-feature ``degeneracy`` judge is given), the gold items
    (read labels) and ``human`` (objective, response, harmful) rows."""
    keep = list(corpus)
    if degeneracy is not None:
        if degeneracy.uses_reference:
            raise ValueError("the corpus filter takes a surface-feature degeneracy judge")
        probs = degeneracy.probabilities(
            feature_rows(degeneracy.features, [], [], [it.response for it in keep])
        )
        keep = [it for it, p in zip(keep, probs, strict=True) if p < degeneracy.threshold]

    def example(prompt: str, response: list[int], unsafe: bool, source: str) -> GuardExample:
        return GuardExample(
            tuple(encode(prompt))[:MAX_PROMPT_TOKENS],
            tuple(response)[:MAX_RESPONSE_TOKENS],
            unsafe,
            source,
        )

    out = [example(it.prompt, it.response_tokens, aligned_unsafe(it), it.kind) for it in keep]
    out += [example(g.prompt, encode(g.answer), g.harmful, GOLD) for g in gold]
    out += [example(o, encode(r), h, HUMAN) for o, r, h in human]
    return out
