"""Shared value types: a token sequence with its segments, a compute tally.

Every layer above the backend speaks in these types. They hold plain Python ints (token ids),
never tensors, so they are cheap to copy, hash and serialise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

Tokens = tuple[int, ...]


@dataclass(frozen=True)
class TokenSequence:
    """One policy-side token sequence, split into its segments.

    Layout (paper, "The problem")::

        template_prefix | prompt | template_infix | prefill | generated

    ``template_prefix`` and ``template_infix`` come from the chat template; ``prefill`` is the
    attacker-controlled start of the answer: the policy sees it, reward models and judges never
    do. ``generated`` holds what the defence produced after it.
    """

    template_prefix: Tokens
    prompt: Tokens
    template_infix: Tokens
    prefill: Tokens = ()
    generated: Tokens = ()

    @property
    def context(self) -> Tokens:
        """Everything before the generated tokens: what the policy is conditioned on."""
        return self.template_prefix + self.prompt + self.template_infix + self.prefill

    @property
    def tokens(self) -> Tokens:
        """The full sequence the policy reads."""
        return self.context + self.generated

    def __len__(self) -> int:
        return (
            len(self.template_prefix)
            + len(self.prompt)
            + len(self.template_infix)
            + len(self.prefill)
            + len(self.generated)
        )

    def extend(self, *tokens: int) -> TokenSequence:
        """A new sequence with ``tokens`` appended to ``generated``."""
        return replace(self, generated=self.generated + tuple(tokens))

    def with_generated(self, generated: Tokens) -> TokenSequence:
        """A new sequence whose generated segment is ``generated``."""
        return replace(self, generated=tuple(generated))


@dataclass
class ModelCompute:
    """Compute spent by one model: forward tokens, reused (cached) tokens, FLOPs, calls.

    ``tokens_computed`` counts positions that ran through the transformer; ``tokens_reused``
    counts positions a request needed that were served from the cache (they cost nothing).
    ``calls`` counts requests (one request may batch many sequences); ``sequences`` counts the
    sequences scored across those requests.
    """

    tokens_computed: int = 0
    tokens_reused: int = 0
    flops: float = 0.0
    calls: int = 0
    sequences: int = 0
    forwards: int = 0

    def add(self, other: ModelCompute) -> None:
        """Accumulate ``other`` into self (mutates self)."""
        self.tokens_computed += other.tokens_computed
        self.tokens_reused += other.tokens_reused
        self.flops += other.flops
        self.calls += other.calls
        self.sequences += other.sequences
        self.forwards += other.forwards

    def minus(self, other: ModelCompute) -> ModelCompute:
        """The difference self − other (a new object)."""
        return ModelCompute(
            tokens_computed=self.tokens_computed - other.tokens_computed,
            tokens_reused=self.tokens_reused - other.tokens_reused,
            flops=self.flops - other.flops,
            calls=self.calls - other.calls,
            sequences=self.sequences - other.sequences,
            forwards=self.forwards - other.forwards,
        )

    def copy(self) -> ModelCompute:
        return replace(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens_computed": self.tokens_computed,
            "tokens_reused": self.tokens_reused,
            "tflop": self.flops / 1e12,
            "calls": self.calls,
            "sequences": self.sequences,
            "forwards": self.forwards,
        }


@dataclass
class Compute:
    """Compute of one request across models, keyed by role (``policy``, ``guard``, ``mrm``)."""

    per_model: dict[str, ModelCompute] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def flops(self) -> float:
        return sum(m.flops for m in self.per_model.values())

    @property
    def tflop(self) -> float:
        return self.flops / 1e12

    def to_dict(self) -> dict[str, Any]:
        return {
            "tflop": self.tflop,
            "wall_s": self.wall_s,
            "models": {k: v.to_dict() for k, v in sorted(self.per_model.items())},
        }
