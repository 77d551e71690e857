"""The policy: a backend plus its chat format, and the next-token distribution helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from saffron.lm.backend import Backend, PlainBackend, TrieBackend
from saffron.lm.batching import batches
from saffron.lm.chat import ChatFormat
from saffron.lm.models import LoadedModel, load_model
from saffron.runtime import CPU, RuntimeConfig
from saffron.types import TokenSequence


@dataclass
class Policy:
    """The language model being defended. Reads whole sequences (prefill included)."""

    backend: Backend
    chat: ChatFormat

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size

    def next_logits(self, seqs: Sequence[TokenSequence]) -> Tensor:
        """Next-token logits (B, vocab) after each full sequence, in float32."""
        return self.backend.logits([s.tokens for s in seqs]).float()


def make_policy(loaded: LoadedModel, *, cache: bool = True, kv_budget: int | None = None) -> Policy:
    """Wrap a loaded model as a policy with a trie cache (``cache=False``: no cache)."""
    backend: Backend = TrieBackend(loaded, max_bytes=kv_budget) if cache else PlainBackend(loaded)
    gen_eos = getattr(loaded.model.generation_config, "eos_token_id", None)
    extra = (
        tuple(gen_eos) if isinstance(gen_eos, list) else ((gen_eos,) if gen_eos is not None else ())
    )
    chat = ChatFormat.from_tokenizer(
        loaded.tokenizer, max_context=loaded.max_context, extra_eos=tuple(int(e) for e in extra)
    )
    return Policy(backend=backend, chat=chat)


def load_policy(name: str, runtime: RuntimeConfig = CPU, *, cache: bool = True) -> Policy:
    """The policy ``name`` loaded with ``runtime`` (device, dtype, KV budget)."""
    return make_policy(load_model(name, runtime), cache=cache, kv_budget=runtime.kv_budget)


def bulk_greedy(
    policy: Policy, seqs: Sequence[TokenSequence], max_new_tokens: int, batch_size: int = 32
) -> list[tuple[int, ...]]:
    """Greedy continuations of many sequences with Hugging Face ``generate`` (its own KV
    cache, left padding): for building training data in bulk, where no search runs and the
    trie's sharing buys nothing. Each result holds the new tokens up to and including the
    first stop token, or ``max_new_tokens`` tokens. Same tokens as stepping the policy
    greedily (tested), up to ties in floating point.
    """
    model = policy.backend.loaded.model
    pad = int(policy.backend.loaded.tokenizer.pad_token_id or 0)
    eos = sorted(policy.chat.eos_ids)
    dev = next(model.parameters()).device
    out: list[tuple[int, ...]] = []
    for chunk in batches(seqs, batch_size):
        part = [list(s.tokens) for s in chunk]
        width = max(len(t) for t in part)
        ids = torch.tensor([[pad] * (width - len(t)) + t for t in part], device=dev)
        mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in part], device=dev)
        with torch.inference_mode():
            gen = model.generate(  # type: ignore[operator]
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        for row in gen[:, width:].tolist():
            cut = next((j + 1 for j, t in enumerate(row) if t in policy.chat.eos_ids), len(row))
            out.append(tuple(row[:cut]))
    return out
