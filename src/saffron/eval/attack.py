"""Attack specifications: how the answer's prefill is chosen for each prompt.

* ``none`` — no prefill.
* ``prefill`` — the row's own ``prefill`` text (rows without one get none).
* ``prefill:K`` — a row's own ``prefill`` if it has one; otherwise the first K policy tokens of
  the row's reference harmful answer; otherwise the first K tokens of an *unaligned* policy's
  compliant answer to the prompt (the paper prefills the first 10 tokens of a harmful answer
  written by a jailbroken model; sets such as AdvBench ship none). Those answers are generated
  once per prompt by ``saffron attack-answers`` with the base SmolLM2 (which complies with most
  harmful requests) and committed in ``artifacts/harmful-answers/``; an answer that is a
  refusal is never used (:func:`compliant`), and a prompt without a compliant answer is skipped
  by the attack.

The prefill is part of the policy's context and is never judged.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from saffron.data import PromptRow, is_refusal
from saffron.errors import SaffronError
from saffron.files import append_jsonl
from saffron.lm.batching import batches
from saffron.lm.policy import Policy
from saffron.paths import artifacts_dir
from saffron.search.base import SearchConfig
from saffron.search.decoding import decode_batch, generator

_SPEC = re.compile(r"^(none|prefill)(?::(\d+))?$")


@dataclass(frozen=True)
class Attack:
    kind: str  # "none" | "prefill"
    tokens: int | None  # K for prefill:K

    @property
    def spec(self) -> str:
        return self.kind if self.tokens is None else f"{self.kind}:{self.tokens}"


def parse_attack(spec: str) -> Attack:
    """Parse ``none``, ``prefill`` or ``prefill:K`` (K ≥ 1); anything else is refused."""
    m = _SPEC.match(spec.strip())
    if not m or (m.group(1) == "none" and m.group(2) is not None):
        raise SaffronError(f"unknown attack {spec!r}; expected none, prefill, or prefill:K")
    k = int(m.group(2)) if m.group(2) is not None else None
    if k is not None and k < 1:
        raise SaffronError(f"attack {spec!r}: K must be ≥ 1")
    return Attack(m.group(1), k)


# --- harmful answers: where a prefill:K attack takes its K tokens ----------------------------

HARMFUL_ANSWERS = "harmful-answers"


@dataclass(frozen=True)
class HarmfulAnswer:
    """An unaligned policy's compliant answer to one prompt (``text`` None: it found none).

    ``decoding`` is ``greedy`` or ``sample:<try>``: the greedy answer is taken unless it is a
    refusal or too short; then seeded samples are tried in order.
    """

    prompt_id: str
    prompt: str
    text: str | None
    decoding: str


def answers_path(dataset: str, root: Path | None = None) -> Path:
    """The committed answers of a named set: ``artifacts/harmful-answers/<dataset>.jsonl``."""
    return (root or artifacts_dir() / HARMFUL_ANSWERS) / f"{dataset}.jsonl"


def read_answers(path: Path) -> dict[str, HarmfulAnswer]:
    """The answers in ``path`` by prompt id ({} when the file does not exist)."""
    if not path.is_file():
        return {}
    out: dict[str, HarmfulAnswer] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                a = HarmfulAnswer(**json.loads(line))
                out[a.prompt_id] = a
    return out


def compliant(text: str, n_tokens: int, prompt: str, min_tokens: int) -> bool:
    """Usable as an attack: long enough, and not a refusal by the phrase rule (the prefill of
    an attack must not itself be a refusal, as some of an unaligned policy's answers are)."""
    return n_tokens >= min_tokens and bool(text.strip()) and not is_refusal(text, prompt)


@dataclass(frozen=True)
class AnswerConfig:
    """How harmful answers are generated."""

    max_new_tokens: int = 48
    """The answer's length; a prefill:K attack takes its first K tokens."""
    min_tokens: int = 10
    """A shorter answer cannot fill a 10-token prefill, so it does not count as compliant."""
    tries: int = 8
    """Seeded samples tried after a refused or short greedy answer."""
    top_p: float = 0.95
    """Nucleus of those samples (temperature 1)."""
    batch_size: int = 32
    """Prompts per batched decode."""
    seed: int = 0
    """Seeds the samples."""


def write_harmful_answers(
    policy: Policy, rows: list[PromptRow], path: Path, cfg: AnswerConfig
) -> dict[str, HarmfulAnswer]:
    """Generate (or finish generating) the answers of ``rows`` into the JSONL ``path``.

    Greedy first; prompts whose greedy answer is not :func:`compliant` get up to ``cfg.tries``
    samples, and a prompt with none gets ``text: null`` (an attack then skips it). Lines are
    appended per batch, so a killed run resumes.
    """
    done = read_answers(path)
    todo = [r for r in rows if r.id not in done]
    for batch in batches(todo, cfg.batch_size):
        got = answer_batch(policy, batch, cfg)
        append_jsonl(path, [asdict(a) for a in got])
        done.update((a.prompt_id, a) for a in got)
    return done


def answer_batch(policy: Policy, rows: list[PromptRow], cfg: AnswerConfig) -> list[HarmfulAnswer]:
    """One batch of :func:`write_harmful_answers`, from a cleared cache (the same answers
    wherever the batch runs): greedy answers for ``rows``; then, in one batched decode,
    ``cfg.tries`` samples of every prompt whose greedy answer is not compliant, the first
    compliant sample (by try) kept."""
    chat = policy.chat
    search = SearchConfig(max_new_tokens=cfg.max_new_tokens, min_new_tokens=0, top_p=cfg.top_p)

    def answers(todo: list[PromptRow], greedy: bool) -> list[tuple[PromptRow, str, int]]:
        seqs = [chat.sequence(r.prompt, reserve=cfg.max_new_tokens) for r in todo]
        policy.backend.clear()
        gen = generator(replace(search, seed=cfg.seed))
        outs = decode_batch(policy, seqs, search, greedy=greedy, gen=gen)
        policy.backend.clear()  # and after: the cache holds nothing a later call needs
        out = []
        for r, s in zip(todo, outs, strict=True):
            toks = tuple(t for t in s.generated if t not in chat.eos_ids)
            out.append((r, chat.decode(toks), len(toks)))
        return out

    found: dict[str, HarmfulAnswer] = {}
    for r, text, n in answers(rows, greedy=True):
        if compliant(text, n, r.prompt, cfg.min_tokens):
            found[r.id] = HarmfulAnswer(r.id, r.prompt, text, "greedy")
    left = [r for r in rows if r.id not in found]
    if left and cfg.tries:
        tries = [r for t in range(cfg.tries) for r in left]  # try-major: try 1 of all first
        for i, (r, text, n) in enumerate(answers(tries, greedy=False)):
            if r.id not in found and compliant(text, n, r.prompt, cfg.min_tokens):
                found[r.id] = HarmfulAnswer(r.id, r.prompt, text, f"sample:{i // len(left) + 1}")
    return [found.get(r.id) or HarmfulAnswer(r.id, r.prompt, None, "none") for r in rows]
