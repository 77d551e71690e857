"""Subcommands that train the embedded world: ``train-policy``, ``train-guard``, ``label`` and
``train-mrm``. Every default comes from the trainer's config dataclass."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from saffron.cli import train_data
from saffron.cli.args import (
    add_ray,
    add_runtime,
    cluster,
    integer,
    names,
    runtime,
    search_rule,
    selection_rule,
    unit,
)
from saffron.errors import SaffronError
from saffron.lm.models import SMOLLM2
from saffron.reward.loading import DEFAULT_GUARD, SMOL_GUARD
from saffron.train.corpus import N_BENIGN
from saffron.train.guard_train import GuardTrainConfig
from saffron.train.label import LabelConfig
from saffron.train.mrm_train import MRMTrainConfig
from saffron.train.policy_train import PolicyTrainConfig

DEFAULT_POLICY = SMOLLM2  # the base the embedded world's artifacts are trained on


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``train-policy``, ``train-guard``, ``label`` and ``train-mrm``."""
    _add_train_policy(sub)
    _add_train_guard(sub)
    _add_label(sub)
    _add_train_mrm(sub)
    _add_visit(sub)


def _add_train_guard(sub: argparse._SubParsersAction) -> None:
    d = GuardTrainConfig
    tg = sub.add_parser("train-guard", help="train the embedded smol-guard (LoRA on SmolLM2)")
    tg.add_argument("--seed", type=integer, default=d.seed)
    tg.add_argument("--epochs", type=integer, default=d.epochs)
    tg.add_argument("--per-set", type=integer, default=None, help="harmful prompts per set")
    tg.add_argument("--benign", type=integer, default=N_BENIGN, help="benign prompts in the corpus")
    tg.add_argument("--no-human", action="store_true", help="skip the human-labelled rows")
    tg.add_argument(
        "--own-start",
        action="store_true",
        help="add the policy's answers after its own greedy start (the eval's prefill attack)",
    )
    tg.add_argument(
        "--redirect",
        action="store_true",
        help="add the policy's safe redirections after its own greedy start",
    )
    tg.add_argument(
        "--balance",
        type=unit,
        nargs="?",
        const=0.5,
        default=d.balance,
        metavar="POWER",
        help="weigh each source's minority label by (n_major/n_minor)**POWER "
        "(0 = off, the default; bare --balance = 0.5; 1 = both labels equal)",
    )
    tg.add_argument(
        "--human-weight",
        type=float,
        default=d.human_weight,
        help="loss weight of the human-labelled rows against the rule-labelled corpus",
    )
    tg.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    tg.add_argument("--rank", type=integer, default=d.rank, help="LoRA rank (alpha = 2 × rank)")
    tg.add_argument(
        "--first-layer", type=integer, default=d.first_layer, help="LoRA on layers from this one"
    )
    add_runtime(tg)
    tg.add_argument("--out", default=None, help="output folder (default: the embedded one)")
    tg.add_argument(
        "--world",
        choices=("unaligned", "aligned"),
        default="unaligned",
        help="aligned: the aligned policies' answers (no attack, after a harmful start, benign), "
        "the gold set's train part and the human rows (see saffron.train.aligned_corpus)",
    )


def _add_label(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser(
        "label",
        help="token-level reward dataset: the guard's reward after every response token",
        description="Label every prefix of every corpus response with the guard's process "
        "reward (resumable: rerun to finish). Example: saffron label --guard smol-guard",
    )
    lab.add_argument("--guard", default=DEFAULT_GUARD, help="guard name or adapter folder")
    lab.add_argument(
        "--policy", default=DEFAULT_POLICY, help="policy whose tokens the corpus holds"
    )
    lab.add_argument("--corpus", default=None, help="corpus JSONL (default: the embedded one)")
    lab.add_argument("--out", default=None, help="output folder (default: in the user cache)")
    lab.add_argument(
        "--shard-size", type=integer, default=LabelConfig.shard_size, help="items per shard file"
    )
    lab.add_argument(
        "--batch-size", type=integer, default=LabelConfig.batch_size, help="items per guard call"
    )
    add_ray(lab)
    add_runtime(lab)


def _add_train_mrm(sub: argparse._SubParsersAction) -> None:
    d = MRMTrainConfig
    tm = sub.add_parser(
        "train-mrm",
        help="train a multifurcation reward model by partial supervision",
        description="Train the MRM (LoRA + reward-head bias on the guard) on a label dataset "
        "by partial supervision. Example: saffron train-mrm  (labels of `saffron label` with its "
        "defaults -> src/saffron/artifacts/smol-mrm)",
    )
    tm.add_argument(
        "--labels",
        default=None,
        help="label folder, or several comma-separated (e.g. the corpus's and the "
        "search-visited states' of `saffron visit`; default: the embedded one)",
    )
    tm.add_argument("--guard", default=None, help="backbone guard (default: the labels' guard)")
    tm.add_argument("--policy", default=None, help="policy (default: the labels' policy)")
    tm.add_argument("--out", default=None, help="output folder (default: embedded smol-mrm)")
    tm.add_argument("--epochs", type=integer, default=d.epochs)
    tm.add_argument("--batch-size", type=integer, default=d.batch_size, help="sequences per step")
    tm.add_argument("--lr", type=float, default=d.lr, help="LoRA learning rate (paper)")
    tm.add_argument("--bias-lr", type=float, default=d.bias_lr, help="head-bias learning rate")
    tm.add_argument("--rank", type=integer, default=d.rank, help="LoRA rank")
    tm.add_argument("--alpha", type=integer, default=d.alpha, help="LoRA alpha")
    tm.add_argument("--targets", default=",".join(d.targets), help="LoRA target modules")
    tm.add_argument(
        "--first-layer", type=integer, default=d.first_layer, help="LoRA on layers from this one"
    )
    tm.add_argument("--holdout", type=float, default=d.holdout, help="held-out fraction of prompts")
    tm.add_argument(
        "--max-steps", type=integer, default=d.max_steps, help="stop after this many steps"
    )
    tm.add_argument("--seed", type=integer, default=d.seed)
    add_runtime(tm)


def _add_train_policy(sub: argparse._SubParsersAction) -> None:
    d = PolicyTrainConfig
    tp = sub.add_parser(
        "train-policy",
        help="safety fine-tuning of a policy with LoRA (the embedded smol-aligned)",
        description="Teach a policy to refuse harmful requests (train splits -> varied written "
        "refusals) while keeping its helpfulness (benign prompts -> its own answers). "
        "--deep adds deep-alignment examples (a harmful start, then a recovery). Examples: "
        "saffron train-policy  (-> smol-aligned);  saffron train-policy --deep 0.5 --out "
        "src/saffron/artifacts/smol-aligned-deep",
    )
    tp.add_argument("--base", default=DEFAULT_POLICY, help="the policy to align")
    tp.add_argument("--out", default=None, help="output folder (default: embedded smol-aligned)")
    tp.add_argument(
        "--data",
        default=None,
        help='JSONL of {"prompt", "harmful": bool, "response"?} rows instead of the built-in mix',
    )
    tp.add_argument(
        "--deep",
        type=unit,
        default=d.deep_fraction,
        metavar="FRACTION",
        help="share of harmful prompts that also get a deep-alignment example",
    )
    tp.add_argument(
        "--deep-max-prefix",
        type=integer,
        default=d.deep_max_prefix,
        help="longest harmful start of a deep example, in tokens",
    )
    tp.add_argument("--per-set", type=integer, default=d.per_set, help="harmful prompts per set")
    tp.add_argument(
        "--redirect-fraction",
        type=unit,
        default=d.redirect_fraction,
        help="share of refusals followed by a safe redirection",
    )
    _add_policy_training(tp)


def _add_policy_training(tp: argparse.ArgumentParser) -> None:
    """``train-policy``'s optimisation settings."""
    d = PolicyTrainConfig
    tp.add_argument("--epochs", type=integer, default=d.epochs)
    tp.add_argument(
        "--decision-weight",
        type=float,
        default=d.decision_weight,
        help="weight of each example's first-token loss (the refuse-or-answer choice)",
    )
    tp.add_argument("--batch-size", type=integer, default=d.batch_size)
    tp.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    tp.add_argument("--rank", type=integer, default=d.rank, help="LoRA rank (alpha = 2 × rank)")
    tp.add_argument("--seed", type=integer, default=d.seed)
    add_runtime(tp)


def cmd_train_policy(args: argparse.Namespace) -> int:
    from saffron.lm.models import ALIGNED, load_model
    from saffron.lm.policy import make_policy
    from saffron.paths import artifacts_dir
    from saffron.train.policy_train import (
        check_out_dir,
        policy_examples,
        read_policy_data,
        train_policy,
    )

    cfg = PolicyTrainConfig(
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        rank=args.rank,
        per_set=args.per_set,
        redirect_fraction=args.redirect_fraction,
        deep_fraction=args.deep,
        deep_max_prefix=args.deep_max_prefix,
        decision_weight=args.decision_weight,
    )
    out = Path(args.out) if args.out else artifacts_dir() / ALIGNED
    check_out_dir(out, args.base)
    user_file = read_policy_data(Path(args.data)) if args.data else None
    rt = runtime(args)
    base = load_model(args.base, rt)
    policy = make_policy(base, kv_budget=rt.kv_budget)
    data = train_data.policy_data(policy, args.base, cfg, user_file)
    examples = policy_examples(policy.chat, data, cfg)
    policy.backend.clear()
    info: dict[str, object] = {
        "data": Path(args.data).name if args.data else "built-in",
        "harmful_prompts": len(data.harmful),
        "benign_prompts": len(data.benign),
    }
    meta = train_policy(base, examples, out, cfg, info)
    print(json.dumps(meta, indent=2))
    print(f"policy written to {out}")
    return 0


def cmd_train_guard(args: argparse.Namespace) -> int:
    from saffron.lm.models import load_model
    from saffron.reward.loading import adapter_dir
    from saffron.train.guard_train import guard_examples, train_guard

    cfg = GuardTrainConfig(
        seed=args.seed,
        epochs=args.epochs,
        balance=args.balance,
        human_weight=args.human_weight,
        lr=args.lr,
        rank=args.rank,
        alpha=2 * args.rank,
        first_layer=args.first_layer,
    )
    out = Path(args.out) if args.out else adapter_dir(SMOL_GUARD)
    rt = runtime(args)
    if args.world == "aligned":
        examples = train_data.aligned_guard_examples(args, rt)
        meta = train_guard(load_model(SMOLLM2, rt), examples, out, cfg)
        print(json.dumps(meta, indent=2))
        print(f"smol-guard (aligned world) written to {out}")
        return 0
    corpus = train_data.guard_corpus(args, rt)
    base = load_model(SMOLLM2, rt)
    examples = guard_examples(
        corpus,
        lambda t: base.tokenizer.encode(t, add_special_tokens=False),
        human=not args.no_human,
    )
    meta = train_guard(base, examples, out, cfg)
    print(json.dumps(meta, indent=2))
    print(f"smol-guard written to {out}")
    return 0


def _default_corpus() -> str:
    from saffron.paths import cache_dir

    return str(cache_dir() / "corpus" / f"{SMOLLM2}-seed0.jsonl")


def _default_labels(guard: str, corpus: str) -> str:
    from saffron.paths import cache_dir

    return str(cache_dir() / "labels" / f"{Path(guard).name}--{Path(corpus).stem}")


def cmd_label(args: argparse.Namespace) -> int:
    from contextlib import nullcontext
    from functools import partial

    from saffron.cluster import worker_runtime
    from saffron.lm.adapters import fingerprint
    from saffron.train.label import (
        cluster_labeller,
        label_corpus,
        load_tokenizer,
        policy_guard,
        read_corpus,
    )

    cfg = LabelConfig(shard_size=args.shard_size, batch_size=args.batch_size)
    corpus = Path(args.corpus or _default_corpus()).expanduser()
    out = Path(args.out or _default_labels(args.guard, str(corpus))).expanduser()
    ray = cluster(args)  # with Ray, the workers check the device and take the threads
    rt = runtime(args) if ray is None else worker_runtime(runtime(args, here=False), ray)
    if not corpus.is_file():
        raise SaffronError(f"corpus file {corpus} does not exist")
    if not read_corpus(corpus):  # fail before loading any model
        raise SaffronError(f"corpus file {corpus} is empty; nothing to label")
    tok = load_tokenizer(args.policy)
    make = partial(policy_guard, args.guard, args.policy, rt)
    with cluster_labeller(ray, make, args.policy, cfg, rt) if ray else nullcontext() as parts:
        meta = label_corpus(
            make() if ray is None else None,
            tok,
            corpus,
            out,
            cfg,
            guard_name=args.guard,
            policy_name=args.policy,
            guard_weights=fingerprint(args.guard),
            dtype=rt.dtype,
            label_parts=parts,
        )
    print(json.dumps(meta, indent=2))
    print(f"labels written to {out}")
    return 0


def _mrm_config(args: argparse.Namespace) -> MRMTrainConfig:
    return MRMTrainConfig(
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        bias_lr=args.bias_lr,
        rank=args.rank,
        alpha=args.alpha,
        targets=names(args.targets),
        first_layer=args.first_layer,
        holdout=args.holdout,
        max_steps=args.max_steps,
    )


def cmd_train_mrm(args: argparse.Namespace) -> int:
    from saffron.lm.adapters import fingerprint
    from saffron.lm.vocab import vocab_hash
    from saffron.reward.mrm_load import guard_backbone, mrm_dir
    from saffron.train.label import load_tokenizer, read_label_sets
    from saffron.train.mrm_train import check_labels, train_mrm

    cfg = _mrm_config(args)
    rt = runtime(args)
    folders = [
        Path(f).expanduser()
        for f in names(args.labels or _default_labels(DEFAULT_GUARD, _default_corpus()))
    ]
    labels = folders[0]
    meta, items = read_label_sets(folders)
    guard = args.guard or str(meta["guard"])
    policy = args.policy or str(meta["policy"])
    policy_hash = vocab_hash(load_tokenizer(policy))
    check_labels(meta, policy_hash, int(str(meta["vocab_size"])), policy)  # before loading
    backbone, layout = guard_backbone(guard, rt)
    vocab = int(backbone.model.get_output_embeddings().out_features)
    check_labels(meta, policy_hash, vocab, policy)
    weights = fingerprint(guard)
    made_by = meta.get("guard_weights")
    if made_by and weights and made_by != weights:
        raise SaffronError(
            f"the labels in {labels} were made by other {guard} weights ({made_by}) than the "
            f"ones here ({weights}); relabel with `saffron label`"
        )
    out = Path(args.out).expanduser() if args.out else mrm_dir()
    info: dict[str, object] = {
        "base_guard": guard,
        "base_guard_weights": weights,
        "policy": policy,
        "policy_vocab_hash": policy_hash,
        # folders in the user cache: their names, not this machine's paths
        "labels": ",".join(f.name for f in folders),
        "label_items": len(items),
    }
    result = train_mrm(backbone, layout, items, out, cfg, info)
    print(json.dumps(result, indent=2))
    print(f"MRM written to {out}")
    return 0


def _add_visit(sub: argparse._SubParsersAction) -> None:
    from saffron.lm.models import ALIGNED
    from saffron.reward.mrm_load import SMOL_MRM
    from saffron.train.visited import VisitConfig

    d = VisitConfig()
    vi = sub.add_parser(
        "visit",
        help="the states Saffron reaches on training prompts, as a corpus to label (DAgger)",
        description="Run Saffron with the current MRM on train-split prompts under the "
        "harmful prefill and write every sequence of its final pool as a corpus item (kind "
        "search-visited), for `saffron label --corpus FILE` and `saffron train-mrm --labels "
        "OLD,NEW`. Resumable. Example: saffron visit --per-set 40",
    )
    vi.add_argument("--policy", default=ALIGNED, help="the policy the search runs")
    vi.add_argument("--mrm", default=SMOL_MRM, help="the MRM that guides it")
    vi.add_argument("--per-set", type=integer, default=40, help="train prompts per harmful set")
    vi.add_argument("--budget", type=integer, default=d.search.budget, help="Saffron's width N")
    vi.add_argument("--prefill", type=integer, default=d.prefill_tokens, help="K of the prefill")
    vi.add_argument("--max-new-tokens", type=integer, default=d.search.max_new_tokens)
    vi.add_argument("--concurrency", type=integer, default=d.concurrency, metavar="K")
    vi.add_argument("--seed", type=integer, default=d.search.seed)
    vi.add_argument("--out", default=None, help="corpus file (default: in the user cache)")
    search_rule(vi, guard_cost=False)
    add_runtime(vi)


def cmd_visit(args: argparse.Namespace) -> int:
    from saffron.lm.models import load_model
    from saffron.lm.policy import make_policy
    from saffron.paths import cache_dir
    from saffron.reward.mrm_load import load_mrm
    from saffron.search import SearchConfig, World
    from saffron.train.corpus import training_prompts
    from saffron.train.visited import VisitConfig, visit

    search = SearchConfig(  # a bad budget or rule fails here, before any model loads
        budget=args.budget,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=min(SearchConfig.min_new_tokens, args.max_new_tokens),
        seed=args.seed,
        **selection_rule(args, True, True),
    )
    cfg = VisitConfig(search, prefill_tokens=args.prefill, concurrency=args.concurrency)
    rt = runtime(args)
    rows = training_prompts(args.seed, args.per_set)
    starts, _ = train_data.harmful_starts(rows, rt)
    policy = make_policy(load_model(args.policy, rt), kv_budget=rt.kv_budget)
    world = World(policy, mrm=load_mrm(args.mrm, policy, runtime=rt))
    name = f"visited-{Path(args.policy).name}-{Path(args.mrm).name}-n{args.budget}"
    out = Path(args.out or cache_dir() / "corpus" / f"{name}-seed{args.seed}.jsonl").expanduser()
    items = visit(world, rows, starts, out, cfg)
    print(
        f"{len(items)} search-visited states of {len({i.prompt for i in items})} prompts in {out}"
    )
    print(f"next: saffron label --corpus {out}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train-guard": cmd_train_guard,
    "label": cmd_label,
    "train-mrm": cmd_train_mrm,
    "train-policy": cmd_train_policy,
    "visit": cmd_visit,
}
