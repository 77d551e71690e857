"""A growable tensor pool holding, per slot, one position's keys, values and hidden state.

Layout::

    keys, values : (n_layers, n_kv_heads, capacity, head_dim)
    hidden       : (capacity, d_model)      # final-norm hidden state at that position

Heads before slots: viewed flat as (n_layers, n_kv_heads · capacity, head_dim), one
``index_select`` with row ``h · capacity + slot`` gathers the past of a whole batch straight
into the (batch, heads, length, head_dim) layout attention reads, with no transpose copy (see
:meth:`KVPool.flat_index`). Slot 0 is reserved and stays zero: gathers use it as padding. The
pool grows by doubling up to ``max_slots``; freed slots are reused. While it grows, the old
and the new tensors coexist (``peak_bytes`` records the most held at once).
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
        self.keys = torch.zeros(n_layers, n_kv_heads, cap, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.hidden = torch.zeros(cap, d_model, dtype=dtype, device=device)
        self._free: list[int] = list(range(cap - 1, 0, -1))  # pop() gives low slots first
        self.peak_bytes = self.bytes_allocated  # most bytes held at once, growth included

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
        return int(self.keys.shape[2])

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
        # each tensor is copied into its larger successor, then dropped: at most the old pool
        # and the new one are held at once
        self.peak_bytes = max(self.peak_bytes, (old + new) * self.bytes_per_slot)
        self.keys = _widened(self.keys, 2, new)
        self.values = _widened(self.values, 2, new)
        self.hidden = _widened(self.hidden, 0, new)
        self._free.extend(range(new - 1, old - 1, -1))
        self._free.sort(reverse=True)

    def flat_index(self, slots: torch.Tensor) -> torch.Tensor:
        """Rows of :meth:`flat_keys` for ``slots`` (…,): shape (…[0], n_kv_heads, …[1:]).

        For slots of shape (B, T) the result (B, kv, T) indexes head h of slot s at
        ``h · capacity + s``, so a gather yields (n_layers, B · kv · T, head_dim), which is the
        contiguous (n_layers, B, kv, T, head_dim) attention layout.
        """
        heads = torch.arange(self.n_kv_heads, device=slots.device) * self.capacity
        shape = (slots.shape[0], self.n_kv_heads, *slots.shape[1:])
        extra = (None,) * (slots.dim() - 1)
        return (slots[:, None] + heads[(None, slice(None), *extra)]).reshape(shape)

    def flat_keys(self) -> torch.Tensor:
        """``keys`` viewed as (n_layers, n_kv_heads · capacity, head_dim) (a view)."""
        return self.keys.view(self.n_layers, -1, self.head_dim)

    def flat_values(self) -> torch.Tensor:
        return self.values.view(self.n_layers, -1, self.head_dim)

    @property
    def bytes_allocated(self) -> int:
        return self.capacity * self.bytes_per_slot


def _widened(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """A zero tensor like ``t`` but ``size`` long along ``dim``, holding ``t`` at its start
    (one allocation of the new size, one copy: no padding tensor besides)."""
    shape = list(t.shape)
    shape[dim] = size
    out = t.new_zeros(shape)
    out.narrow(dim, 0, t.shape[dim]).copy_(t)
    return out
