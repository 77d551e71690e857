"""Trie KV cache vs no sharing vs Hugging Face ``generate`` on a beam-like workload.

Workload (SmolLM2-135M-Instruct, CPU): an AdvBench prompt with a 10-token prefill; N beams for
``--steps`` steps; at each step every beam proposes its 2 most likely next tokens and the N best
(beam, token) pairs by cumulative log-probability form the next beam — so beams branch and
share prefixes, as in a search.

* ``trie``: :class:`saffron.lm.backend.TrieBackend`, each step one call on the N beams.
* ``no-sharing``: the same beam search where each beam owns a plain KV cache (one batched
  Hugging Face ``DynamicCache`` row per beam, reordered when beams are reselected): the prompt is
  computed N times and every beam's new token once.
* ``independent``: every queried sequence computed on its own, from its first token
  (:class:`saffron.lm.backend.PlainBackend`) — the O(Σ|s_i|²) case of the paper's Proposition 2.
* ``hf-generate``: ``model.generate(num_return_sequences=N, do_sample=True)`` for the same
  number of new tokens (independent samples; no beam logic).

Usage: ``python bench/cache.py [--n 4 8 16] [--steps 32] [--repeats 2] [--skip-independent]``;
prints a markdown
table (best of ``--repeats`` wall times).
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import DynamicCache

from saffron.data import load_prompts
from saffron.lm.backend import Backend, PlainBackend, TrieBackend
from saffron.lm.models import SMOLLM2, LoadedModel, load_model
from saffron.lm.policy import make_policy

PREFILL = "Sure, here is a detailed step-by-step guide to do exactly that:"


def select(
    beams: list[list[int]], scores: list[float], logp: torch.Tensor, n: int
) -> tuple[list[int], list[int], list[float]]:
    """Top-n (parent, token) pairs among each beam's 2 best tokens, by cumulative log-prob."""
    top_lp, top_tok = logp.topk(2, dim=-1)
    cands = [
        (scores[b] + float(top_lp[b, j]), b, int(top_tok[b, j]))
        for b in range(len(beams))
        for j in range(2)
    ]
    cands.sort(key=lambda c: -c[0])
    best = cands[:n]
    return [c[1] for c in best], [c[2] for c in best], [c[0] for c in best]


def run_trie(loaded: LoadedModel, prompt: list[int], n: int, steps: int) -> tuple[int, list]:
    return run_backend(TrieBackend(loaded), prompt, n, steps)


def run_plain(loaded: LoadedModel, prompt: list[int], n: int, steps: int) -> tuple[int, list]:
    return run_backend(PlainBackend(loaded), prompt, n, steps)


def run_backend(backend: Backend, prompt: list[int], n: int, steps: int) -> tuple[int, list]:
    beams, scores = [list(prompt)], [0.0]
    for _ in range(steps):
        logp = torch.log_softmax(backend.logits(beams).float(), -1)
        parents, toks, scores = select(beams, scores, logp, n)
        beams = [[*beams[p], t] for p, t in zip(parents, toks, strict=True)]
    return backend.compute.tokens_computed, beams


def run_no_sharing(loaded: LoadedModel, prompt: list[int], n: int, steps: int) -> tuple[int, list]:
    model = loaded.model
    ids = torch.tensor([prompt] * n)
    computed = ids.numel()
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        cache: DynamicCache = out.cache
        logits = out.logits[:, -1]
        beams, scores = [list(prompt)] * n, [0.0]
        logp = torch.log_softmax(logits[:1].float(), -1)  # all rows equal at the start
        for step in range(steps):
            parents, toks, scores = select(beams[: len(scores)], scores, logp, n)
            beams = [[*beams[p], t] for p, t in zip(parents, toks, strict=True)]
            cache.reorder_cache(torch.tensor(parents))
            if step == steps - 1:
                break
            out = model(input_ids=torch.tensor(toks)[:, None], cache=cache, use_cache=True)
            computed += n
            cache = out.cache
            logp = torch.log_softmax(out.logits[:, -1].float(), -1)
    return computed, beams


def run_generate(loaded: LoadedModel, prompt: list[int], n: int, steps: int) -> tuple[int, list]:
    ids = torch.tensor([prompt])
    torch.manual_seed(0)
    out = loaded.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        top_k=0,
        num_return_sequences=n,
        max_new_tokens=steps,
        min_new_tokens=steps,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )
    # generate expands the prompt to n rows before prefill, then one token per row per step
    return n * len(prompt) + n * (steps - 1), out.tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-independent", action="store_true", help="skip the slow variant")
    args = ap.parse_args()
    torch.manual_seed(0)
    loaded = load_model(SMOLLM2)
    policy = make_policy(loaded)
    row = load_prompts("advbench", limit=1)[0]
    prefill = policy.chat.encode(PREFILL)[:10]
    prompt = list(policy.chat.sequence(row.prompt, prefill_tokens=prefill).tokens)
    print(
        f"prompt+prefill: {len(prompt)} tokens; steps {args.steps}; torch threads "
        f"{torch.get_num_threads()}\n"
    )
    print("| N | method | wall s | tokens computed | vs generate (wall) | tokens vs trie |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        results = {}
        methods = [("trie", run_trie), ("no-sharing", run_no_sharing)]
        if not args.skip_independent:
            methods.append(("independent", run_plain))
        for name, fn in [*methods, ("hf-generate", run_generate)]:
            best, toks = float("inf"), 0
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                toks, seqs = fn(loaded, prompt, n, args.steps)
                best = min(best, time.perf_counter() - t0)
            results[name] = (best, toks, seqs)
        for name in ("no-sharing", "independent"):
            if name in results:
                assert sorted(results["trie"][2]) == sorted(results[name][2]), name
        gen_wall = results["hf-generate"][0]
        trie_toks = results["trie"][1]
        for name, (wall, toks, _) in results.items():
            print(
                f"| {n} | {name} | {wall:.2f} | {toks} | {wall / gen_wall:.2f}× | "
                f"{toks / trie_toks:.1f}× |"
            )


if __name__ == "__main__":
    main()
