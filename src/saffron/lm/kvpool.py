"""A growable tensor pool holding, per slot, one position's keys, values and hidden state.

Layout::

    keys, values : (n_layers, capacity, n_kv_heads, head_dim)
    hidden       : (capacity, d_model)      # final-norm hidden state at that position

Slot 0 is reserved and stays zero: gathers use it as padding. The pool grows by doubling up to
``max_slots``; freed slots are reused.
"""

from __future__ import annotations

import torch


class KVPool:
    """Slot storage. The trie decides which slots are live; the pool only stores."""

    def __init__(
        self,
        *,
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        d_model: int,
        dtype: torch.dtype,
        device: torch.device,
        max_slots: int,
        initial_slots: int = 256,
    ) -> None:
        self.n_layers, self.n_kv_heads, self.head_dim, self.d_model = (
            n_layers,
            n_kv_heads,
            head_dim,
            d_model,
        )
        self.dtype, self.device = dtype, device
        self.max_slots = max_slots
        cap = max(2, min(initial_slots, max_slots))
        self.keys = torch.zeros(n_layers, cap, n_kv_heads, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.hidden = torch.zeros(cap, d_model, dtype=dtype, device=device)
        self._free: list[int] = list(range(cap - 1, 0, -1))  # pop() gives low slots first

    @staticmethod
    def bytes_per_slot_for(
        n_layers: int, n_kv_heads: int, head_dim: int, d_model: int, dtype: torch.dtype
    ) -> int:
        elem = torch.empty((), dtype=dtype).element_size()
        return elem * (2 * n_layers * n_kv_heads * head_dim + d_model)

    @property
    def bytes_per_slot(self) -> int:
        return self.bytes_per_slot_for(
            self.n_layers, self.n_kv_heads, self.head_dim, self.d_model, self.dtype
        )

    @property
    def capacity(self) -> int:
        return int(self.keys.shape[1])

    @property
    def used(self) -> int:
        return self.capacity - 1 - len(self._free)

    def available(self) -> int:
        """Slots that can be handed out without eviction (free now or by growing)."""
        return len(self._free) + (self.max_slots - self.capacity)

    def alloc(self, n: int) -> list[int]:
        """Hand out ``n`` slots, growing if needed. Caller checked ``available() >= n``."""
        while len(self._free) < n:
            self._grow()
        return [self._free.pop() for _ in range(n)]

    def free(self, slots: list[int]) -> None:
        self._free.extend(slots)

    def reset(self) -> None:
        self._free = list(range(self.capacity - 1, 0, -1))

    def _grow(self) -> None:
        old = self.capacity
        new = min(self.max_slots, old * 2)
        if new <= old:
            raise RuntimeError("KV pool is at its byte budget")
        pad = new - old
        self.keys = torch.cat(
            [self.keys, self.keys.new_zeros(self.n_layers, pad, *self.keys.shape[2:])], 1
        )
        self.values = torch.cat(
            [self.values, self.values.new_zeros(self.n_layers, pad, *self.values.shape[2:])], 1
        )
        self.hidden = torch.cat([self.hidden, self.hidden.new_zeros(pad, self.d_model)], 0)
        self._free.extend(range(new - 1, old - 1, -1))
        self._free.sort(reverse=True)

    @property
    def bytes_allocated(self) -> int:
        return self.capacity * self.bytes_per_slot
