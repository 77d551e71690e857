"""Step helpers every method uses: EOS rules, sampling, stopping."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from saffron.lm.policy import Policy
from saffron.search.base import SearchConfig
from saffron.types import TokenSequence


def is_finished(seq: TokenSequence, policy: Policy, cfg: SearchConfig) -> bool:
    """A sequence is finished when it ends in a stop token or reached max_new_tokens."""
    gen = seq.generated
    return bool(gen) and (gen[-1] in policy.chat.eos_ids or len(gen) >= cfg.max_new_tokens)


def ended_by_eos(seq: TokenSequence, policy: Policy) -> bool:
    return bool(seq.generated) and seq.generated[-1] in policy.chat.eos_ids


def policy_logits(policy: Policy, seqs: Sequence[TokenSequence], cfg: SearchConfig) -> Tensor:
    """Next-token logits (B, V), with stop tokens forbidden before ``min_new_tokens``.

    Returns a new tensor the caller owns (a clone: the backend's output may be an inference-mode
    tensor, which cannot be written in place).
    """
    logits = policy.next_logits(seqs).clone()
    for b, s in enumerate(seqs):
        if len(s.generated) < cfg.min_new_tokens:
            logits[b, list(policy.chat.eos_ids)] = float("-inf")
    return logits


def sample_tokens(logits: Tensor, cfg: SearchConfig, gen: torch.Generator) -> list[int]:
    """One sampled token per row of ``logits`` at ``cfg.temperature`` within top-p."""
    # on the CPU: the generator is a CPU one, and draws then match across devices
    probs = torch.softmax(logits.float().cpu() / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = torch.cumsum(sorted_p, -1) - sorted_p
        sorted_p = torch.where(before < cfg.top_p, sorted_p, torch.zeros_like(sorted_p))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1).tolist()


def greedy_starts(policy: Policy, seqs: list[TokenSequence], k: int) -> list[tuple[int, ...]]:
    """The first ``k`` tokens of each sequence's greedy continuation, stop tokens dropped: the
    prefill of an attack that opens with the undefended policy's own answer."""
    outs = decode_batch(policy, seqs, SearchConfig(max_new_tokens=k, min_new_tokens=0), greedy=True)
    eos = policy.chat.eos_ids
    return [tuple(t for t in s.generated if t not in eos) for s in outs]


def generator(cfg: SearchConfig, salt: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(cfg.seed * 1_000_003 + salt)
    return g


def decode_batch(
    policy: Policy,
    seqs: list[TokenSequence],
    cfg: SearchConfig,
    *,
    greedy: bool,
    gen: torch.Generator | None = None,
) -> list[TokenSequence]:
    """Extend every sequence until finished, all unfinished ones batched per step."""
    seqs = list(seqs)
    while True:
        live = [i for i, s in enumerate(seqs) if not is_finished(s, policy, cfg)]
        if not live:
            return seqs
        logits = policy_logits(policy, [seqs[i] for i in live], cfg)
        if greedy:
            toks = logits.argmax(-1).tolist()
        else:
            assert gen is not None
            toks = sample_tokens(logits, cfg, gen)
        for i, t in zip(live, toks, strict=True):
            seqs[i] = seqs[i].extend(int(t))
