"""Attack specifications: how the answer's prefill is chosen for each prompt.

* ``none`` — no prefill.
* ``prefill`` — the row's own ``prefill`` text (rows without one get none).
* ``prefill:K`` — a row's own ``prefill`` if it has one; otherwise the first K policy tokens of
  the row's reference harmful answer; otherwise the first K tokens of the policy's own greedy
  answer without any prefill (the paper prefills the first 10 tokens of a harmful answer; sets
  such as AdvBench ship none, and the undefended policy's own start is the natural stand-in).

The prefill is part of the policy's context and is never judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from saffron.errors import SaffronError

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
