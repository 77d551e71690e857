"""Language-model backend: outputs of a causal LM over many token sequences.

The one job of this layer: given token sequences that may share prefixes, return each one's
final hidden state at its last position (or at every position from some index on), from which
any head — the LM head, a reward head — is applied. Two implementations share the interface:

* :class:`TrieBackend` keeps every computed position in a prefix trie with its key/value tensors
  and hidden state, so each distinct prefix is computed at most once across calls (paper,
  Proposition 2). New tokens of many sequences run in one batched forward with their true
  position ids and a per-sequence attention mask.
* :class:`PlainBackend` recomputes every sequence from scratch each call: the reference that
  parity tests compare against.

Both count compute in a :class:`~saffron.types.ModelCompute` (``backend.compute``): tokens
computed, tokens reused, FLOPs (:mod:`saffron.lm.flops`), calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import Cache
from transformers.cache_utils import DynamicLayer

from saffron.errors import SaffronError
from saffron.lm.batching import chunk_sizes
from saffron.lm.flops import FlopModel
from saffron.lm.kvpool import KVPool
from saffron.lm.ledger import Ledger
from saffron.lm.models import LoadedModel
from saffron.lm.stem import Stem, StemPlan, plan_stems, stem_attention_on, stem_index
from saffron.lm.trie import PENDING, Trie, TrieNode, plan_call
from saffron.types import ModelCompute

DEFAULT_KV_BUDGET = 2 << 30  # bytes
DEFAULT_BATCH_TOKENS = 16384  # padded positions (past + new) per forward: bounds gathered KV
# Shared stems (saffron.lm.stem) are used in a forward when they save at least this many
# bytes of gathered keys and values; None: never. Off until measured on the embedded models
# (BENCHMARKS.md, "Where a step's time goes": the reused gather buffer already removed most of
# the gather's cost; 64 MiB, about the copy a 16-beam search's prompt costs, is the setting to
# measure with `bench/speed.py --stem-min-mib 64`).
STEM_MIN_BYTES: int | None = None


@dataclass(frozen=True)
class CacheStats:
    """What the cache holds now."""

    nodes: int
    bytes_held: int
    bytes_budget: int
    bytes_allocated: int
    bytes_peak: int = 0  # most bytes the cache and its transient buffers held at once


@dataclass
class _Segment:
    """Tokens ``tokens`` to compute after the stored prefix whose slots are ``past``."""

    past: list[int]
    tokens: list[int]
    out_slots: list[int]  # where to store each computed position (trie backend)


class Backend(ABC):
    """Hidden states of one causal LM at chosen positions of many sequences.

    Contract for every method taking ``seqs``: each sequence is a non-empty sequence of token
    ids no longer than the model's context; outputs are float tensors on the model's device,
    owned by the caller (copies, not views of a cache).
    """

    def __init__(self, loaded: LoadedModel, *, max_batch_tokens: int = DEFAULT_BATCH_TOKENS):
        self.loaded = loaded
        self.model = loaded.model
        self.decoder: nn.Module = loaded.model.base_model
        head = loaded.model.get_output_embeddings()
        assert isinstance(head, nn.Linear), "causal LM without a linear output head"
        self.lm_head: nn.Linear = head
        config = loaded.model.config
        self.flop_model = FlopModel.from_decoder(self.decoder, config)
        self.d_model = int(config.hidden_size)
        self.vocab_size = int(head.out_features)
        self.max_context = loaded.max_context
        self.max_batch_tokens = max_batch_tokens
        self.compute = ModelCompute()
        p = next(self.model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self._payers: list[Ledger] | None = None
        self._scratch: Tensor | None = None  # reused gather buffer (see :meth:`_gather_buffer`)
        self.stem_min_bytes = STEM_MIN_BYTES  # see :meth:`_stem_plan`; 0 forces shared stems

    @property
    def name(self) -> str:
        return self.loaded.name

    # --- public interface -------------------------------------------------------------------

    @abstractmethod
    def last_hidden(self, seqs: Sequence[Sequence[int]]) -> Tensor:
        """Final hidden state at the last position of each sequence: shape (B, d_model)."""

    @abstractmethod
    def hidden_from(self, seqs: Sequence[Sequence[int]], starts: Sequence[int]) -> list[Tensor]:
        """For each sequence, hidden states at positions ``start … len-1``: (len-start, d)."""

    def clear(self) -> None:  # noqa: B027  (a no-op is the right default without a cache)
        """Drop every cached position (no-op without a cache)."""

    def stats(self) -> CacheStats:
        return CacheStats(nodes=0, bytes_held=0, bytes_budget=0, bytes_allocated=0)

    def ledger(self) -> Ledger:
        """An empty ledger that charges calls as this backend computes them alone."""
        return Ledger(self.flop_model, self.d_model, self.max_batch_tokens, cached=False)

    @contextmanager
    def charged_to(self, payers: Sequence[Ledger]) -> Iterator[None]:
        """Inside the block, row i of every call is also charged to ``payers[i]``.

        Contract: every call made in the block (``last_hidden``, ``logits``, ``apply_head``)
        has exactly one row per payer, in the payers' order — what the scheduler's shared
        policy, MRM and guard calls are. The backend's own ``compute`` still counts what ran.
        """
        self._payers = list(payers)
        try:
            yield
        finally:
            self._payers = None

    def _charge(self, seqs: list[tuple[int, ...]]) -> None:
        """Charge each payer its own rows of this call (see :mod:`saffron.lm.ledger`)."""
        if self._payers is None:
            return
        if len(self._payers) != len(seqs):
            raise SaffronError(
                f"a shared call of {len(seqs)} rows was charged to {len(self._payers)} payers"
            )
        mine: dict[int, list[tuple[int, ...]]] = {}
        for payer, seq in zip(self._payers, seqs, strict=True):
            mine.setdefault(id(payer), []).append(seq)
        for payer in {id(p): p for p in self._payers}.values():
            payer.charge(mine[id(payer)])

    def charge_positions(self, rows: Sequence[tuple[int, int]]) -> None:
        """Count, for each row (past, new), ``new`` positions computed after ``past`` ones,
        without computing anything: an accounting charge for work a model of the cost says a
        call needs but this backend does not run (:class:`saffron.reward.costing.SuffixCosted`).

        Adds tokens and FLOPs (:meth:`FlopModel.segment`), not calls or forwards. Inside
        :meth:`charged_to`, row i is charged to ``payers[i]`` (one row per payer).
        """
        for past, new in rows:
            self.compute.tokens_computed += new
            self.compute.flops += self.flop_model.segment(past, new)
        if self._payers is None:
            return
        if len(self._payers) != len(rows):
            raise SaffronError(f"{len(rows)} charged rows for {len(self._payers)} payers")
        for payer, (past, new) in zip(self._payers, rows, strict=True):
            payer.charge_positions(past, new)

    def logits(self, seqs: Sequence[Sequence[int]]) -> Tensor:
        """Next-token logits after each sequence: (B, vocab). Counts the head's FLOPs."""
        return self.apply_head(self.last_hidden(seqs), self.lm_head)

    def apply_head(self, hidden: Tensor, head: nn.Module, d_out: int | None = None) -> Tensor:
        """Apply a linear-like head to hidden states (…, d_model) and count its FLOPs.

        ``d_out`` defaults to the head's ``out_features``.
        """
        rows = hidden.numel() // hidden.shape[-1]
        out_features = d_out if d_out is not None else int(getattr(head, "out_features"))  # noqa: B009
        with torch.inference_mode():
            out = head(hidden)
        self.count_head(rows, out_features)
        return out

    def count_head(self, rows: int, d_out: int, payer: Ledger | None = None) -> None:
        """Count a head of ``d_out`` outputs over ``rows`` hidden states (its FLOPs) in
        ``compute`` and charge it to ``payer``, or, inside :meth:`charged_to`, row i to
        ``payers[i]``. A head read entry by entry (one weight row per entry) has ``d_out`` 1
        per entry read."""
        self.compute.flops += FlopModel.head(rows, self.d_model, d_out)
        if payer is not None:
            payer.charge_head(rows, d_out)
        if self._payers is not None:
            if rows != len(self._payers):
                raise SaffronError(f"a shared head over {rows} rows has {len(self._payers)} payers")
            count: dict[int, int] = {}
            for p in self._payers:
                count[id(p)] = count.get(id(p), 0) + 1
            for p in {id(p): p for p in self._payers}.values():
                p.charge_head(count[id(p)], d_out)

    # --- shared machinery -------------------------------------------------------------------

    def _validate(self, seqs: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        out = []
        for s in seqs:
            t = tuple(map(int, s))  # a C loop: this runs over every row's every token
            if not t:
                raise SaffronError("a token sequence is empty; nothing to compute")
            if len(t) > self.max_context:
                raise SaffronError(
                    f"a sequence of {len(t)} tokens exceeds {self.name}'s context of "
                    f"{self.max_context} tokens"
                )
            out.append(t)
        self._charge(out)
        return out

    def _chunks(self, segments: list[_Segment]) -> list[list[_Segment]]:
        """Group one wave's segments into forwards (:func:`~saffron.lm.batching.chunk_sizes`)."""
        sizes = [(len(s.past), len(s.tokens)) for s in segments]
        return [[segments[i] for i in idx] for idx in chunk_sizes(sizes, self.max_batch_tokens)]

    def _forward(
        self, segments: list[_Segment], pool: KVPool | None
    ) -> tuple[Tensor, list[_BufferLayer]]:
        """One batched forward of ``segments``; returns hidden (B, Lm, d) and each layer's
        buffer (B, kv, Pm + Lm, hd): the gathered past, then the new positions.

        Past keys/values are gathered from ``pool`` once, straight into the buffer attention
        reads (left-padded with the zero slot 0); the model writes the new tokens' K/V into the
        same buffer in place (:class:`_BufferLayer`), so no per-layer concatenation copies the
        past again. New tokens are right-padded. The boolean mask (B, 1, Lm, Pm + Lm) lets
        token q of sequence b see its own past and its own new tokens ≤ q; padded query rows
        see the sequence's valid keys (their outputs are discarded) so no row is fully masked.

        With shared stems (:meth:`_stem_plan`), the buffer holds only each row's past after its
        group's stem (Pm is the longest such suffix); the stems are gathered once per group and
        passed to :func:`~saffron.lm.stem.stem_attention`; position ids still count the stem.
        """
        dev = self.device
        plan = self._stem_plan(segments, pool)
        cut = plan.cut if plan is not None else [0] * len(segments)
        pasts = [s.past[c:] for s, c in zip(segments, cut, strict=True)]  # each row's own part
        pm = max(len(p) for p in pasts)
        lm = max(len(s.tokens) for s in segments)
        # one tensor from Python lists per input (no per-row tensor construction)
        ids = torch.tensor([s.tokens + [0] * (lm - len(s.tokens)) for s in segments], device=dev)
        slots = [[0] * (pm - len(p)) + p + [0] * lm for p in pasts]  # (B, Pm + Lm)
        lens = torch.tensor(
            [[len(p), len(s.tokens), c] for p, s, c in zip(pasts, segments, cut, strict=True)],
            device=dev,
        )
        position_ids = (lens[:, 0] + lens[:, 2])[:, None] + torch.arange(lm, device=dev)[None, :]
        attn_mask = self._mask(lens[:, 0], lens[:, 1], pm, lm)
        with torch.inference_mode():
            buffers = self._buffers(pool, torch.tensor(slots, device=dev), pm)
            extra = {} if plan is None or pool is None else {"stem": _stem(plan, segments, pool)}
            with nullcontext() if plan is None else stem_attention_on(self.model):
                out = self.decoder(
                    input_ids=ids,
                    attention_mask=attn_mask,
                    position_ids=position_ids,
                    cache=Cache(layers=list(buffers)),
                    use_cache=True,
                    **extra,
                )
        self.compute.forwards += 1
        return out.last_hidden_state, buffers

    def _mask(self, p_len: Tensor, n_len: Tensor, pm: int, lm: int) -> Tensor:
        """The (B, 1, Lm, Pm + Lm) mask of :meth:`_forward` for buffer pasts of ``p_len`` and
        ``n_len`` new tokens per row (additive for attention other than SDPA)."""
        dev = self.device
        bsz = int(p_len.shape[0])
        ar_new = torch.arange(lm, device=dev)
        past_valid = torch.arange(pm, device=dev)[None, :] >= (pm - p_len)[:, None]  # (B, Pm)
        new_valid = ar_new[None, :] < n_len[:, None]  # (B, Lm)
        causal = ar_new[None, :] <= ar_new[:, None]  # (Lm q, Lm k)
        new_part = causal[None, :, :] & new_valid[:, None, :]  # (B, Lm, Lm)
        mask = torch.cat([past_valid[:, None, :].expand(bsz, lm, pm), new_part], dim=-1)
        attn_mask: Tensor = mask[:, None, :, :]
        if getattr(self.model.config, "_attn_implementation", "sdpa") != "sdpa":
            # eager attention adds the mask to the scores: 0 where allowed, a large negative
            attn_mask = torch.zeros(attn_mask.shape, dtype=self.dtype, device=dev).masked_fill(
                ~attn_mask, torch.finfo(self.dtype).min
            )
        return attn_mask

    def _stem_plan(self, segments: list[_Segment], pool: KVPool | None) -> StemPlan | None:
        """Shared stems for this forward (:mod:`saffron.lm.stem`), or None: no pool, attention
        other than SDPA, stems off (``stem_min_bytes`` None), or fewer than ``stem_min_bytes``
        of keys and values saved (below that, the stem path's extra small operations cost more
        than the copy they save)."""
        sdpa = getattr(self.model.config, "_attn_implementation", None) == "sdpa"
        if pool is None or not sdpa or self.stem_min_bytes is None:
            return None
        plan = plan_stems([s.past for s in segments])
        per_position = 2 * pool.n_layers * pool.n_kv_heads * pool.head_dim
        saved = plan.saved * per_position * pool.keys.element_size()
        return plan if plan.saved and saved >= self.stem_min_bytes else None

    def _buffers(self, pool: KVPool | None, slots: Tensor, past: int) -> list[_BufferLayer]:
        """One :class:`_BufferLayer` per layer for slots (B, Pm + Lm): one gather per forward."""
        bsz, width = slots.shape
        if pool is not None and past:
            rows = pool.flat_index(slots).reshape(-1)  # (B·kv·T,)
            nl, kvh, hd = pool.n_layers, pool.n_kv_heads, pool.head_dim
            keys, values = self._gather_buffer(nl * rows.numel() * hd, pool.keys.dtype)
            keys, values = keys.view(nl, -1, hd), values.view(nl, -1, hd)
            torch.index_select(pool.flat_keys(), 1, rows, out=keys)  # (n_layers, B·kv·T, hd)
            torch.index_select(pool.flat_values(), 1, rows, out=values)
        else:
            cfg = self.model.config
            nl = int(cfg.num_hidden_layers)
            kvh = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
            hd = int(getattr(cfg, "head_dim", None) or self.d_model // cfg.num_attention_heads)
            keys = torch.zeros(nl, bsz * kvh * width, hd, dtype=self.dtype, device=self.device)
            values = torch.zeros_like(keys)
        keys, values = keys.view(nl, bsz, kvh, width, hd), values.view(nl, bsz, kvh, width, hd)
        return [_BufferLayer(keys[i], values[i], past) for i in range(nl)]

    def _gather_buffer(self, numel: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Two flat buffers of ``numel`` elements (keys, values) for one forward's gathered
        past, views of one scratch tensor that every forward reuses.

        Why: a fresh allocation of this size (hundreds of MB per forward with 16 searches in
        flight) is new pages from the OS, faulted in on first write and unmapped on free,
        costs that the profile's gather and write-back regions include (BENCHMARKS.md, "Where
        a step's time goes").
        The scratch grows by powers of two, never past the positions a forward may pad
        (``max_batch_tokens``), so it stays within the transient half of the KV budget;
        :meth:`clear` frees it. Contents are garbage until written: the gather overwrites
        every element, the model writes the new positions.
        """
        cap = 2 * numel
        if self._scratch is None or self._scratch.numel() < cap or self._scratch.dtype != dtype:
            size = 1 << (cap - 1).bit_length()
            limit = 2 * self._scratch_limit()
            self._scratch = None  # free the old one before allocating the new
            self._scratch = torch.empty(max(cap, min(size, limit)), dtype=dtype, device=self.device)
        return self._scratch[:numel], self._scratch[numel:cap]

    def _scratch_limit(self) -> int:
        """Elements of keys (or values) for ``max_batch_tokens`` padded positions."""
        cfg = self.model.config
        nl = int(cfg.num_hidden_layers)
        kvh = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        hd = int(getattr(cfg, "head_dim", None) or self.d_model // cfg.num_attention_heads)
        return self.max_batch_tokens * nl * kvh * hd

    def _count(self, computed: list[tuple[int, int]], reused: int, n_seqs: int) -> None:
        """Record one call: ``computed`` lists (past, new) token counts per segment."""
        c = self.compute
        c.calls += 1
        c.sequences += n_seqs
        c.tokens_reused += reused
        for past, new in computed:
            c.tokens_computed += new
            c.flops += self.flop_model.segment(past, new)


class PlainBackend(Backend):
    """No cache: every call runs each sequence from its first token. Reference for parity."""

    def _hidden_all(self, seqs: list[tuple[int, ...]]) -> list[Tensor]:
        segs = [_Segment(past=[], tokens=list(s), out_slots=[]) for s in seqs]
        out: dict[int, Tensor] = {}
        for chunk in self._chunks(segs):
            hidden, _ = self._forward(chunk, None)
            for b, seg in enumerate(chunk):
                out[id(seg)] = hidden[b, : len(seg.tokens)].clone()
        self._count([(0, len(s)) for s in seqs], 0, len(seqs))
        return [out[id(seg)] for seg in segs]

    def last_hidden(self, seqs: Sequence[Sequence[int]]) -> Tensor:
        return torch.stack([h[-1] for h in self._hidden_all(self._validate(seqs))])

    def hidden_from(self, seqs: Sequence[Sequence[int]], starts: Sequence[int]) -> list[Tensor]:
        hs = self._hidden_all(self._validate(seqs))
        return [h[st:] for h, st in zip(hs, starts, strict=True)]


class TrieBackend(Backend):
    """Trie-shared KV cache with a byte budget and LRU eviction of leaves.

    ``max_bytes`` (None: ``DEFAULT_KV_BUDGET``) bounds everything the cache holds at once,
    counted in positions of ``bytes_per_slot`` (keys + values of every layer + hidden state):
    the pool of cached positions, its growth (the old and the new pool coexist while it is
    copied), and a forward's transient buffers (the gathered past and the new positions). Half
    of the budget is the pool's; the other half bounds a forward's padded positions
    (``max_batch_tokens`` is lowered to fit) and a growth's copy, so at no time does the sum
    exceed the budget (``stats().bytes_peak``).

    When a call needs more room, least recently used leaves not needed by the call are
    evicted; a call whose new positions do not fit even then is split into parts of whole
    sequences, each run (and its outputs copied out) before the next evicts it. Only a single
    sequence longer than the pool is refused: attention needs its whole past at once.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_bytes: int | None = None,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
    ) -> None:
        super().__init__(loaded, max_batch_tokens=max_batch_tokens)
        max_bytes = DEFAULT_KV_BUDGET if max_bytes is None else max_bytes
        cfg = loaded.model.config
        n_heads = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or self.d_model // n_heads)
        n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
        n_layers = int(cfg.num_hidden_layers)
        per_slot = KVPool.bytes_per_slot_for(n_layers, n_kv, head_dim, self.d_model, self.dtype)
        positions = max_bytes // per_slot
        max_slots = positions // 2  # the pool's half, its reserved zero slot included
        if max_slots < 2:
            raise SaffronError(
                f"a KV budget of {max_bytes} bytes is too small: it must hold at least 4 "
                f"positions of {per_slot} bytes"
            )
        self.max_bytes = max_bytes
        self.max_batch_tokens = min(max_batch_tokens, positions - max_slots)
        self.peak_bytes = 0
        self.pool = KVPool(
            n_layers=n_layers,
            n_kv_heads=n_kv,
            head_dim=head_dim,
            d_model=self.d_model,
            dtype=self.dtype,
            device=self.device,
            max_slots=max_slots,
        )
        self.trie = Trie()

    # --- interface --------------------------------------------------------------------------

    def last_hidden(self, seqs: Sequence[Sequence[int]]) -> Tensor:
        parts = []
        for _, paths in self._ensure_parts(self._validate(seqs)):
            slots = torch.tensor([p[-1].slot for p in paths], device=self.device)
            parts.append(self.pool.hidden.index_select(0, slots))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def hidden_from(self, seqs: Sequence[Sequence[int]], starts: Sequence[int]) -> list[Tensor]:
        out = []
        for first, paths in self._ensure_parts(self._validate(seqs)):
            for path, st in zip(paths, starts[first : first + len(paths)], strict=True):
                slots = torch.tensor([nd.slot for nd in path[st:]], dtype=torch.long)
                out.append(self.pool.hidden.index_select(0, slots.to(self.device)))
        return out

    def clear(self) -> None:
        self._scratch = None
        self.trie.clear()
        self.pool.reset()

    def stats(self) -> CacheStats:
        return CacheStats(
            nodes=self.trie.size,
            bytes_held=self.pool.used * self.pool.bytes_per_slot,
            bytes_budget=self.max_bytes,
            bytes_allocated=self.pool.bytes_allocated,
            bytes_peak=max(self.peak_bytes, self.pool.peak_bytes),
        )

    def ledger(self) -> Ledger:
        return Ledger(self.flop_model, self.d_model, self.max_batch_tokens, cached=True)

    def cached_prefix_len(self, seq: Sequence[int]) -> int:
        """How many leading tokens of ``seq`` are stored (no side effects on LRU order)."""
        node, n = self.trie.root, 0
        for tok in seq:
            nxt = node.children.get(int(tok))
            if nxt is None or nxt.slot == PENDING:
                break
            node, n = nxt, n + 1
        return n

    # --- the cache --------------------------------------------------------------------------

    def _ensure_parts(
        self, seqs: list[tuple[int, ...]]
    ) -> Iterator[tuple[int, list[list[TrieNode]]]]:
        """Store every position of ``seqs``, in consecutive parts that each fit the pool;
        yields (index of the part's first sequence, the part's node paths). The consumer reads
        a part's outputs before asking for the next, which may evict them. Counted as one
        call once every part ran."""
        counted: list[tuple[int, int]] = []
        reused = first = 0
        while first < len(seqs):
            end = first + self._fitting(seqs[first:])
            paths, segments, hits = self._ensure(seqs[first:end])
            counted += segments
            reused += hits
            yield first, paths
            first = end
        self._count(counted, reused, len(seqs))

    def _fitting(self, seqs: list[tuple[int, ...]]) -> int:
        """How many leading ``seqs`` fit in the pool together: the stored positions they read
        (protected from eviction) plus the new ones they add (each distinct prefix once).
        SaffronError when not even the first fits."""
        room = self.pool.max_slots - 1  # slot 0 is reserved
        if sum(len(s) for s in seqs) <= room:
            return len(seqs)
        held: set[int] = set()  # ids of the stored nodes the part reads
        fresh: dict[int, dict[int, dict]] = {}  # new positions as token trees under a stored node
        added = 0
        for i, seq in enumerate(seqs):
            node, n = self.trie.root, 0
            while n < len(seq) and (nxt := node.children.get(seq[n])) and nxt.slot != PENDING:
                held.add(id(nxt))
                node, n = nxt, n + 1
            tree = fresh.setdefault(id(node), {})
            for tok in seq[n:]:
                if tok not in tree:
                    tree[tok], added = {}, added + 1
                tree = tree[tok]
            if len(held) + added > room:
                if i == 0:
                    raise SaffronError(
                        f"KV cache budget of {self.max_bytes / 2**20:.1f} MiB is too small for a "
                        f"sequence of {len(seq)} tokens (its pool holds {room} positions, half "
                        "the budget); raise the budget"
                    )
                return i
        return len(seqs)

    def _ensure(
        self, seqs: list[tuple[int, ...]]
    ) -> tuple[list[list[TrieNode]], list[tuple[int, int]], int]:
        """Make every position of every sequence stored; return each sequence's node path,
        the (past, new) sizes of the segments computed and the positions reused.

        Each missing node is computed once even when several sequences of the call share it
        (:func:`~saffron.lm.trie.plan_call`: the sequence that inserts a node first owns it; a
        segment whose parent another segment of this call owns runs in a later wave).
        """
        protect = self.trie.next_tick()
        plan = plan_call(self.trie, seqs)
        try:
            self._assign_slots(plan.created, protect)
            counted: list[tuple[int, int]] = []
            for wave in plan.waves():
                todo = [
                    _Segment(
                        [nd.slot for nd in p[:st]],
                        seq_tokens(p, st),
                        [nd.slot for nd in p[st:]],
                    )
                    for p, st in wave
                ]
                for chunk in self._chunks(todo):
                    self._store(chunk)
                counted.extend((len(t.past), len(t.tokens)) for t in todo)
        except BaseException:
            self._undo(plan.created)
            raise
        return plan.paths, counted, plan.reused

    def _assign_slots(self, created: list[TrieNode], protect: int) -> None:
        need = len(created)
        if need > self.pool.available():
            self.pool.free(self.trie.evict(need - self.pool.available(), protect))
        if need > self.pool.available():
            per = self.pool.bytes_per_slot
            raise SaffronError(
                f"KV cache budget of {self.max_bytes / 2**20:.1f} MiB is too small: this call "
                f"needs {(need + self.pool.used) * per / 2**20:.1f} MiB; raise the budget"
            )
        for nd, slot in zip(created, self.pool.alloc(need), strict=True):
            nd.slot = slot

    def _undo(self, created: list[TrieNode]) -> None:
        slots = [nd.slot for nd in created if nd.slot != PENDING]
        for nd in created:
            nd.slot = PENDING
        self.trie.drop_pending(created)
        self.pool.free(slots)

    def _store(self, chunk: list[_Segment]) -> None:
        """Run one forward and write each new position's K/V and hidden state to its slot."""
        hidden, buffers = self._forward(chunk, self.pool)
        pool, dev = self.pool, self.device
        bsz, lm = hidden.shape[0], hidden.shape[1]
        gathered = (
            2 * len(buffers) * buffers[0].buf_keys.numel() * buffers[0].buf_keys.element_size()
        )
        if self._scratch is not None:  # the reused gather buffer, held between forwards
            gathered = max(gathered, self._scratch.numel() * self._scratch.element_size())
        transient = gathered + hidden.numel() * hidden.element_size()
        self.peak_bytes = max(self.peak_bytes, pool.bytes_allocated + transient)
        pm = buffers[0].past  # the buffer's past width (each row's own part when stems are shared)
        n_new = torch.tensor([len(seg.tokens) for seg in chunk], device=dev)
        valid = torch.arange(lm, device=dev)[None, :] < n_new[:, None]  # (B, Lm)
        sel = torch.nonzero(valid.reshape(-1)).squeeze(-1)  # row b·Lm + q, in segment order
        b_of, q_of = sel // lm, sel % lm
        slots = torch.tensor([s for seg in chunk for s in seg.out_slots], device=dev)
        heads = torch.arange(pool.n_kv_heads, device=dev)
        # row of (b, head h, position pm + q) in a layer's flat (B·kv·(Pm+Lm)) buffer, and of
        # (head h, slot) in the pool's flat (kv·capacity) view: both (n_new, kv)
        src = (b_of[:, None] * pool.n_kv_heads + heads[None, :]) * (pm + lm) + pm + q_of[:, None]
        dst = (heads[None, :] * pool.capacity + slots[:, None]).reshape(-1)
        src = src.reshape(-1)
        for layer_i, layer in enumerate(buffers):
            k = layer.buf_keys.reshape(-1, pool.head_dim)  # a view: the buffer is contiguous
            v = layer.buf_values.reshape(-1, pool.head_dim)
            pool.flat_keys()[layer_i].index_copy_(0, dst, k.index_select(0, src))
            pool.flat_values()[layer_i].index_copy_(0, dst, v.index_select(0, src))
        pool.hidden.index_copy_(0, slots, hidden.reshape(bsz * lm, -1).index_select(0, sel))


class _BufferLayer(DynamicLayer):
    """One layer's keys and values for one forward, shape (B, kv, Pm + Lm, hd): the gathered
    past, then room for the new tokens, which :meth:`update` writes in place."""

    def __init__(self, keys: Tensor, values: Tensor, past: int) -> None:
        super().__init__()
        self.buf_keys, self.buf_values, self.past = keys, values, past
        self.keys, self.values = keys, values
        self.is_initialized = True
        self.device = keys.device

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: object, **kwargs: object
    ) -> tuple[Tensor, Tensor]:
        end = self.past + key_states.shape[-2]
        self.buf_keys[:, :, self.past : end] = key_states
        self.buf_values[:, :, self.past : end] = value_states
        return self.buf_keys, self.buf_values

    def get_seq_length(self) -> int:
        return self.past

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.past + query_length, 0


def _stem(plan: StemPlan, segments: list[_Segment], pool: KVPool) -> Stem:
    """The stems of ``plan`` gathered from ``pool``: one copy per group, not per row."""
    dev = pool.device
    slots, valid, rows = stem_index(plan, [s.past for s in segments])
    g, width = slots.shape
    flat = pool.flat_index(slots.to(dev)).reshape(-1)  # (G·kv·S,)
    shape = (pool.n_layers, g, pool.n_kv_heads, width, pool.head_dim)
    keys = pool.flat_keys().index_select(1, flat).view(shape)  # (n_layers, G, kv, S, hd)
    values = pool.flat_values().index_select(1, flat).view(shape)
    place = [0] * len(segments)
    for gi, members in enumerate(plan.groups):
        for r, b in enumerate(members):
            place[b] = gi * int(rows.shape[1]) + r
    return Stem(keys, values, valid.to(dev), rows.to(dev), torch.tensor(place, device=dev))


def seq_tokens(path: list[TrieNode], start: int) -> list[int]:
    """Token ids of ``path[start:]``."""
    return [nd.token for nd in path[start:]]
