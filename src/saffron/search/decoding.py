"""Step helpers every method uses: EOS rules, batched top-p, sampling, stopping, decoding.

Everything here works on whole batches of rows (one tensor op per step, no per-row Python loop
over the vocabulary).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch
from torch import Tensor

from saffron.lm.policy import Policy
from saffron.reward.base import NO_REWARDS
from saffron.search.base import Ask, Reply, SearchConfig
from saffron.types import TokenSequence


def is_finished(seq: TokenSequence, policy: Policy, cfg: SearchConfig) -> bool:
    """A sequence is finished when it ends in a stop token or reached max_new_tokens."""
    gen = seq.generated
    return bool(gen) and (gen[-1] in policy.chat.eos_ids or len(gen) >= cfg.max_new_tokens)


def ended_by_eos(seq: TokenSequence, policy: Policy) -> bool:
    return bool(seq.generated) and seq.generated[-1] in policy.chat.eos_ids


def forbid_stop(
    logits: Tensor, seqs: Sequence[TokenSequence], policy: Policy, cfg: SearchConfig
) -> Tensor:
    """``logits`` (B, V) with stop tokens at −∞ in rows shorter than ``min_new_tokens``.

    Returns a new tensor the caller owns (the input may be an inference-mode tensor).
    """
    return forbid_stop_(logits.clone(), seqs, policy, cfg)


def forbid_stop_(
    logits: Tensor, seqs: Sequence[TokenSequence], policy: Policy, cfg: SearchConfig
) -> Tensor:
    """:func:`forbid_stop` in place on ``logits`` (B, V), which the caller owns; returns it.

    With ``cfg.no_repeat_ngram`` = n set, the tokens :func:`repeats` names are forbidden too."""
    young = [b for b, s in enumerate(seqs) if len(s.generated) < cfg.min_new_tokens]
    if young:
        rows = torch.tensor(young)[:, None]
        logits[rows, torch.tensor(sorted(policy.chat.eos_ids))[None, :]] = float("-inf")
    if cfg.no_repeat_ngram is not None:
        pairs = [(b, t) for b, s in enumerate(seqs) for t in repeats(s, cfg.no_repeat_ngram)]
        if pairs:
            rows_, cols = zip(*pairs, strict=True)
            logits[torch.tensor(rows_), torch.tensor(cols)] = float("-inf")
    return logits


def repeats(seq: TokenSequence, n: int) -> set[int]:
    """The tokens that would complete an n-gram already in ``seq``'s answer (prefill and
    generated tokens): those that follow an earlier occurrence of the answer's last n − 1
    tokens. Forbidding them (a ban on repeated n-grams) rules out the loops "m.. m.. m.."
    that a learned reward overrates; the prompt is not part of the answer, so an answer may
    quote it."""
    answer = seq.prefill + seq.generated
    if len(answer) < n:
        return set()
    tail = answer[len(answer) - n + 1 :] if n > 1 else ()
    return {answer[i + n - 1] for i in range(len(answer) - n + 1) if answer[i : i + n - 1] == tail}


def top_p_mask(logits: Tensor, p: float) -> Tensor:
    """Bool (B, V): the nucleus of ``softmax(logits)`` in each row (paper, "Conservative
    exploration": top-p children, p = 0.8).

    A token is kept when the probability mass of the tokens ranked before it is < p, so at
    least one token per row is kept. Rows are ranked by one ``topk`` of a few candidates; only
    rows whose nucleus is wider than that (a flat distribution) pay for a full sort.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    k = min(probs.shape[-1], 64)
    top_p, top_i = torch.topk(probs, k, dim=-1)  # (B, k), descending
    before = torch.cumsum(top_p, -1) - top_p
    mask = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, top_i, before < p)
    wide = before[:, -1] + top_p[:, -1] < p  # the nucleus reaches past the k candidates
    if bool(wide.any()):
        rows = torch.nonzero(wide).squeeze(-1)
        sorted_p, order = torch.sort(probs[rows], dim=-1, descending=True)
        full_before = torch.cumsum(sorted_p, -1) - sorted_p
        mask[rows] = torch.zeros_like(order, dtype=torch.bool).scatter(-1, order, full_before < p)
    return mask


def nucleus(logits: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """The tokens of :func:`top_p_mask` whose logit is finite, as (row, token) index pairs
    (M,), (M,), row by row, token ids ascending: ``torch.nonzero(top_p_mask(logits, p) &
    torch.isfinite(logits), as_tuple=True)``, without building the (B, V) mask for the rows
    whose nucleus lies within the ``topk`` candidates (all but flat distributions)."""
    probs = torch.softmax(logits.float(), dim=-1)
    n_rows, vocab = probs.shape
    k = min(vocab, 64)
    top_p, top_i = torch.topk(probs, k, dim=-1)  # (B, k), descending
    before = torch.cumsum(top_p, -1) - top_p
    keep = (before < p) & torch.isfinite(logits.gather(1, top_i))  # (B, k)
    wide = before[:, -1] + top_p[:, -1] < p  # the nucleus reaches past the k candidates
    keep[wide] = False
    rows = torch.arange(n_rows)[:, None].expand(n_rows, k)[keep]
    tokens = top_i[keep]
    if bool(wide.any()):  # rows ranked by a full sort, as top_p_mask ranks them
        idx = torch.nonzero(wide).squeeze(-1)
        full = top_p_mask(logits[idx], p) & torch.isfinite(logits[idx])
        sub_rows, sub_tokens = torch.nonzero(full, as_tuple=True)
        rows, tokens = torch.cat([rows, idx[sub_rows]]), torch.cat([tokens, sub_tokens])
    order = torch.argsort(rows * vocab + tokens)
    return rows[order], tokens[order]


def sample_tokens(
    logits: Tensor, cfg: SearchConfig, gen: torch.Generator, keep: Tensor | None = None
) -> list[int]:
    """One sampled token per row of ``logits`` (B, V) at ``cfg.temperature`` within top-p,
    and within ``keep`` (bool, same shape) when given; ``keep`` must leave each row a token of
    its nucleus (the row's most probable token always is one)."""
    # on the CPU: the generator is a CPU one, and draws then match across devices
    scaled = logits.float().cpu() / cfg.temperature
    probs = torch.softmax(scaled, dim=-1)
    if cfg.top_p < 1.0:
        probs = torch.where(top_p_mask(scaled, cfg.top_p), probs, torch.zeros_like(probs))
    if keep is not None:
        probs = torch.where(keep.cpu(), probs, torch.zeros_like(probs))
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1).tolist()


def generator(cfg: SearchConfig, salt: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(cfg.seed * 1_000_003 + salt)
    return g


def decode_steps(
    policy: Policy,
    seqs: Sequence[TokenSequence],
    cfg: SearchConfig,
    *,
    greedy: bool,
    gen: torch.Generator | None = None,
) -> Generator[Ask, Reply, list[TokenSequence]]:
    """Steps that extend every sequence until finished and return them (use with
    ``yield from``). Each step asks the policy for the logits of all unfinished sequences."""
    out = list(seqs)
    while live := [i for i, s in enumerate(out) if not is_finished(s, policy, cfg)]:
        rows = [out[i] for i in live]
        reply: Reply = yield Ask(logits=tuple(rows))
        logits = forbid_stop(reply.logits, rows, policy, cfg)
        if greedy:
            toks = logits.argmax(-1).tolist()
        else:
            assert gen is not None
            toks = sample_tokens(logits, cfg, gen)
        for i, t in zip(live, toks, strict=True):
            out[i] = out[i].extend(int(t))
    return out


def decode_batch(
    policy: Policy,
    seqs: list[TokenSequence],
    cfg: SearchConfig,
    *,
    greedy: bool,
    gen: torch.Generator | None = None,
) -> list[TokenSequence]:
    """Extend every sequence until finished, all unfinished ones batched per step."""
    steps = decode_steps(policy, seqs, cfg, greedy=greedy, gen=gen)
    try:
        ask = next(steps)
        while True:
            logits = policy.next_logits(ask.logits).float().cpu()
            ask = steps.send(Reply(logits, NO_REWARDS, torch.zeros(0)))
    except StopIteration as stop:
        return list(stop.value)


def greedy_starts(policy: Policy, seqs: list[TokenSequence], k: int) -> list[tuple[int, ...]]:
    """The first ``k`` tokens of each sequence's greedy continuation, stop tokens dropped: the
    prefill of an attack that opens with the undefended policy's own answer."""
    outs = decode_batch(policy, seqs, SearchConfig(max_new_tokens=k, min_new_tokens=0), greedy=True)
    eos = policy.chat.eos_ids
    return [tuple(t for t in s.generated if t not in eos) for s in outs]
