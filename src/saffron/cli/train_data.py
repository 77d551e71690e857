"""What the training commands train on: the policy's data mix, the guard's response corpus
(unaligned world) and its examples (aligned world), built or resumed in the user cache.

Each function loads the models it needs and lets them go before returning, so a command can
load the model it trains afterwards.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from saffron.lm.models import SMOLLM2
from saffron.runtime import RuntimeConfig

if TYPE_CHECKING:
    from saffron.data import PromptRow
    from saffron.lm.policy import Policy
    from saffron.train.corpus import CorpusItem
    from saffron.train.guard_train import GuardExample
    from saffron.train.policy_train import PolicyData, PolicyTrainConfig


def policy_data(
    policy: Policy,
    base: str,
    cfg: PolicyTrainConfig,
    user_file: tuple[list[PromptRow], list[tuple[str, str]]] | None,
) -> PolicyData:
    """The built-in mix (train splits, benign prompts answered by the base itself, harmful
    answers for deep examples), or the rows of a ``--data`` file."""
    from saffron.data import load_prompts
    from saffron.data.prompts import BENIGN_PLAIN_TRAIN, BENIGN_TRAIN, validation_split
    from saffron.paths import cache_dir
    from saffron.train.corpus import training_prompts
    from saffron.train.policy_train import PolicyData, self_answers
    from saffron.train.texts import benign_prompts

    if user_file is not None:
        harmful, user = user_file
        return PolicyData(harmful, {}, [], user)
    harmful = training_prompts(cfg.seed, cfg.per_set)
    prompts = benign_prompts() + [
        r.prompt
        for name in (BENIGN_PLAIN_TRAIN, BENIGN_TRAIN)
        for r in validation_split(load_prompts(name))[0]
    ]
    cached = cache_dir() / "policy-data" / f"{Path(base).name}-greedy{cfg.max_answer_tokens}.jsonl"
    benign = self_answers(policy, prompts, cached, cfg.max_answer_tokens)
    answers = deep_starts(policy, harmful) if cfg.deep_fraction > 0 else {}
    return PolicyData(harmful, answers, benign, [])


def deep_starts(policy: Policy, harmful: list[PromptRow]) -> dict[str, str]:
    """The base's own compliant answers to ``harmful`` (unaligned, as the eval's attack), by
    prompt id, for the harmful starts of deep-alignment examples; cached per source."""
    from saffron.eval.attack import AnswerConfig, answers_path, write_harmful_answers
    from saffron.paths import cache_dir

    answers: dict[str, str] = {}
    for source in sorted({r.source for r in harmful}):
        rows = [r for r in harmful if r.source == source]
        path = answers_path(f"{source}-train", cache_dir() / "answers")
        done = write_harmful_answers(policy, rows, path, AnswerConfig())
        answers.update({k: a.text for k, a in done.items() if a.text})
    return answers


def guard_corpus(args: argparse.Namespace, runtime: RuntimeConfig) -> list[CorpusItem]:
    """The response corpus of ``train-guard``'s options, built (or resumed) in the user cache
    by the base SmolLM2 (loaded with ``runtime``)."""
    from saffron.lm.models import load_model
    from saffron.lm.policy import make_policy
    from saffron.paths import cache_dir
    from saffron.train.corpus import build_corpus

    policy = make_policy(load_model(SMOLLM2, runtime), kv_budget=runtime.kv_budget)
    suffix = (
        (f"-per{args.per_set}" if args.per_set else "")
        + ("-ownstart" if args.own_start else "")
        + ("-redirect" if args.redirect else "")
    )
    return build_corpus(
        policy,
        cache_dir() / "corpus" / f"{SMOLLM2}-seed{args.seed}{suffix}.jsonl",
        seed=args.seed,
        per_set=args.per_set,
        n_benign=args.benign,
        own_start=args.own_start,
        redirect=args.redirect,
    )


def aligned_guard_examples(args: argparse.Namespace, runtime: RuntimeConfig) -> list[GuardExample]:
    """The aligned world's guard data (``saffron.train.aligned_corpus``): the aligned policies'
    answers, the gold set's train part and the human rows (unless ``--no-human``)."""
    from saffron.data import load_scorer_rows
    from saffron.data.gold import load_gold
    from saffron.paths import artifacts_dir
    from saffron.reward.degeneracy import DegeneracyJudge
    from saffron.train.aligned_corpus import aligned_examples
    from saffron.train.corpus import training_prompts
    from saffron.train.guard_train import human_heldout

    rows = training_prompts(args.seed, args.per_set)
    starts, encode = harmful_starts(rows, runtime)
    corpus = aligned_corpus(args, rows, starts, runtime)
    human = [
        (r.objective, r.response, bool(r.harmful))
        for r in load_scorer_rows()
        if r.harmful is not None and not human_heldout(r)
    ]
    degeneracy = DegeneracyJudge.load(artifacts_dir() / "degeneracy-surface.json")
    return aligned_examples(
        corpus,
        load_gold("train"),
        [] if args.no_human else human,
        lambda t: list(encode(t)),
        degeneracy,
    )


def harmful_starts(
    rows: list[PromptRow], runtime: RuntimeConfig
) -> tuple[dict[str, tuple[int, ...]], Callable[[str], tuple[int, ...]]]:
    """The unaligned base's compliant answers to ``rows`` as token ids by prompt id (cached in
    the user cache, as for ``--deep``), and the base's text encoder."""
    from saffron.eval.attack import AnswerConfig, answers_path, write_harmful_answers
    from saffron.lm.models import load_model
    from saffron.lm.policy import make_policy
    from saffron.paths import cache_dir

    base = make_policy(load_model(SMOLLM2, runtime), kv_budget=runtime.kv_budget)
    starts: dict[str, tuple[int, ...]] = {}
    for source in sorted({r.source for r in rows}):
        mine = [r for r in rows if r.source == source]
        path = answers_path(f"{source}-train", cache_dir() / "answers")
        done = write_harmful_answers(base, mine, path, AnswerConfig())
        starts.update({k: tuple(base.chat.encode(a.text)) for k, a in done.items() if a.text})
    return starts, base.chat.encode


def aligned_corpus(
    args: argparse.Namespace,
    rows: list[PromptRow],
    starts: dict[str, tuple[int, ...]],
    runtime: RuntimeConfig,
) -> list[CorpusItem]:
    """The answers of ``smol-aligned`` and ``smol-aligned-deep`` (no attack, after harmful
    starts of 5, 10 and 20 tokens, benign), each built or resumed in the user cache."""
    from saffron.lm.adapters import fingerprint
    from saffron.lm.models import ALIGNED, ALIGNED_DEEP, load_model
    from saffron.lm.policy import make_policy
    from saffron.paths import cache_dir
    from saffron.train.aligned_corpus import (
        aligned_jobs,
        benign_training_prompts,
        build_aligned_corpus,
    )

    benign = benign_training_prompts()[: args.benign]
    corpus: list[CorpusItem] = []
    for name in (ALIGNED, ALIGNED_DEEP):
        policy = make_policy(load_model(name, runtime), kv_budget=runtime.kv_budget)
        jobs = aligned_jobs(name, rows, starts, benign, seed=args.seed, prefill_ks=(5, 10, 20))
        tag = f"seed{args.seed}" + (f"-per{args.per_set}" if args.per_set else "")
        # keyed by the weights too: a retrained policy must not reuse the old one's answers
        path = cache_dir() / "corpus" / f"aligned-{name}-{fingerprint(name)}-{tag}.jsonl"
        corpus += build_aligned_corpus(policy, name, jobs, path, seed=args.seed)
        del policy
    return corpus
