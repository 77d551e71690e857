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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from saffron.errors import SaffronError
from saffron.lm.flops import FlopModel
from saffron.lm.kvpool import KVPool
from saffron.lm.models import LoadedModel
from saffron.lm.trie import PENDING, Trie, TrieNode
from saffron.types import ModelCompute

DEFAULT_KV_BUDGET = 2 << 30  # bytes
DEFAULT_BATCH_TOKENS = 16384  # padded positions (past + new) per forward: bounds gathered KV


@dataclass(frozen=True)
class CacheStats:
    """What the cache holds now."""

    nodes: int
    bytes_held: int
    bytes_budget: int
    bytes_allocated: int


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
        self.compute.flops += FlopModel.head(rows, self.d_model, out_features)
        return out

    # --- shared machinery -------------------------------------------------------------------

    def _validate(self, seqs: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        out = []
        for s in seqs:
            t = tuple(int(x) for x in s)
            if not t:
                raise SaffronError("a token sequence is empty; nothing to compute")
            if len(t) > self.max_context:
                raise SaffronError(
                    f"a sequence of {len(t)} tokens exceeds {self.name}'s context of "
                    f"{self.max_context} tokens"
                )
            out.append(t)
        return out

    def _chunks(self, segments: list[_Segment]) -> list[list[_Segment]]:
        """Group segments into forwards of at most ``max_batch_tokens`` padded positions
        (batch × (longest past + longest new)); a single longer segment runs alone.

        Sorting by size first keeps padding small inside each forward.
        """
        order = sorted(segments, key=lambda s: (len(s.past) + len(s.tokens), len(s.tokens)))
        chunks: list[list[_Segment]] = []
        cur: list[_Segment] = []
        pm = lm = 0
        for seg in order:
            npm, nlm = max(pm, len(seg.past)), max(lm, len(seg.tokens))
            if cur and (len(cur) + 1) * (npm + nlm) > self.max_batch_tokens:
                chunks.append(cur)
                cur, npm, nlm = [], len(seg.past), len(seg.tokens)
            cur.append(seg)
            pm, lm = npm, nlm
        if cur:
            chunks.append(cur)
        return chunks

    def _forward(
        self, segments: list[_Segment], pool: KVPool | None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """One batched forward of ``segments``; returns hidden (B, Lm, d) and new K/V per layer.

        Past keys/values are gathered from ``pool`` (left-padded with the zero slot 0); new
        tokens are right-padded. The boolean mask (B, 1, Lm, Pm + Lm) lets token q of sequence
        b see its own past and its own new tokens ≤ q; padded query rows see the sequence's
        valid keys (their outputs are discarded) so no row is fully masked.
        """
        dev = self.device
        bsz = len(segments)
        p_len = torch.tensor([len(s.past) for s in segments], device=dev)
        n_len = torch.tensor([len(s.tokens) for s in segments], device=dev)
        pm, lm = int(p_len.max()), int(n_len.max())
        ids = torch.zeros(bsz, lm, dtype=torch.long, device=dev)
        past_idx = torch.zeros(bsz, pm, dtype=torch.long, device=dev)
        for b, seg in enumerate(segments):
            ids[b, : len(seg.tokens)] = torch.tensor(seg.tokens, device=dev)
            if seg.past:
                past_idx[b, pm - len(seg.past) :] = torch.tensor(seg.past, device=dev)
        ar_new = torch.arange(lm, device=dev)
        position_ids = p_len[:, None] + ar_new[None, :]  # (B, Lm)
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
        cache = DynamicCache()
        if pm:
            assert pool is not None
            nl = pool.n_layers
            flat = past_idx.reshape(-1)
            # (n_layers, B*Pm, kv, hd) -> (n_layers, B, kv, Pm, hd)
            k = pool.keys.index_select(1, flat).view(nl, bsz, pm, *pool.keys.shape[2:])
            v = pool.values.index_select(1, flat).view(nl, bsz, pm, *pool.values.shape[2:])
            k, v = k.transpose(2, 3), v.transpose(2, 3)
            cache = DynamicCache(ddp_cache_data=[(k[i], v[i]) for i in range(nl)])
        with torch.inference_mode():
            out = self.decoder(
                input_ids=ids,
                attention_mask=attn_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            )
        new_kv = [
            (layer.keys[:, :, pm:, :], layer.values[:, :, pm:, :])  # type: ignore[union-attr,index]
            for layer in cache.layers
        ]
        self.compute.forwards += 1
        return out.last_hidden_state, new_kv

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

    ``max_bytes`` bounds the bytes of cached positions (keys + values of every layer + hidden
    state). When a call needs more room, least recently used leaves not needed by the call are
    evicted; a call that alone needs more than the budget is refused.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_bytes: int = DEFAULT_KV_BUDGET,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
    ) -> None:
        super().__init__(loaded, max_batch_tokens=max_batch_tokens)
        cfg = loaded.model.config
        n_heads = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or self.d_model // n_heads)
        n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
        n_layers = int(cfg.num_hidden_layers)
        per_slot = KVPool.bytes_per_slot_for(n_layers, n_kv, head_dim, self.d_model, self.dtype)
        max_slots = max_bytes // per_slot + 1  # + the reserved zero slot
        if max_slots < 2:
            raise SaffronError(f"KV budget of {max_bytes} bytes holds no position ({per_slot} B)")
        self.max_bytes = max_bytes
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
        paths = self._ensure(self._validate(seqs))
        slots = torch.tensor([p[-1].slot for p in paths], device=self.device)
        return self.pool.hidden.index_select(0, slots)

    def hidden_from(self, seqs: Sequence[Sequence[int]], starts: Sequence[int]) -> list[Tensor]:
        paths = self._ensure(self._validate(seqs))
        out = []
        for path, st in zip(paths, starts, strict=True):
            slots = torch.tensor([nd.slot for nd in path[st:]], dtype=torch.long)
            out.append(self.pool.hidden.index_select(0, slots.to(self.device)))
        return out

    def clear(self) -> None:
        self.trie.clear()
        self.pool.reset()

    def stats(self) -> CacheStats:
        return CacheStats(
            nodes=self.trie.size,
            bytes_held=self.pool.used * self.pool.bytes_per_slot,
            bytes_budget=self.max_bytes,
            bytes_allocated=self.pool.bytes_allocated,
        )

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

    def _ensure(self, seqs: list[tuple[int, ...]]) -> list[list[TrieNode]]:
        """Make every position of every sequence stored; return each sequence's node path.

        Each missing node is computed once even when several sequences of the call share it:
        the sequence that inserts a node first owns it (sequences are inserted longest first).
        A segment whose parent is owned by another segment of this call runs in a later wave,
        after its parent is computed.
        """
        protect = self.trie.next_tick()
        paths: list[list[TrieNode]] = [[] for _ in seqs]
        segs: list[tuple[int, list[TrieNode], int]] = []  # (wave, path, start)
        wave_of: dict[int, int] = {}
        created: list[TrieNode] = []
        reused = 0
        # Longest first: a long sequence then owns the shared stem, and shorter ones that branch
        # off it all run in the next wave (prefixes of one answer: 2 waves, not one per prefix).
        for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i])):
            path, start = self.trie.walk(seqs[i], create=True)
            paths[i] = path
            reused += start
            if start == len(path):
                continue
            parent = path[start - 1] if start else None
            wave = wave_of[id(parent)] + 1 if parent is not None and parent.slot == PENDING else 0
            for nd in path[start:]:
                wave_of[id(nd)] = wave
            created.extend(path[start:])
            segs.append((wave, path, start))
        try:
            self._assign_slots(created, protect)
            counted: list[tuple[int, int]] = []
            for wave in range(max((w for w, _, _ in segs), default=-1) + 1):
                todo = [
                    _Segment(
                        [nd.slot for nd in p[:st]],
                        list(seq_tokens(p, st)),
                        [nd.slot for nd in p[st:]],
                    )
                    for w, p, st in segs
                    if w == wave
                ]
                for chunk in self._chunks(todo):
                    self._store(chunk)
                counted.extend((len(t.past), len(t.tokens)) for t in todo)
        except BaseException:
            self._undo(created)
            raise
        self._count(counted, reused, len(seqs))
        return paths

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
        hidden, new_kv = self._forward(chunk, self.pool)
        bsz, lm = hidden.shape[0], hidden.shape[1]
        sel = torch.tensor(
            [b * lm + q for b, seg in enumerate(chunk) for q in range(len(seg.tokens))],
            device=self.device,
        )
        slots = torch.tensor([s for seg in chunk for s in seg.out_slots], device=self.device)
        keys = torch.stack([k for k, _ in new_kv])  # (n_layers, B, kv, Lm, hd)
        values = torch.stack([v for _, v in new_kv])
        nl, kvh, hd = keys.shape[0], keys.shape[2], keys.shape[4]
        # (n_layers, B, Lm, kv, hd) -> (n_layers, B*Lm, kv, hd), row b*Lm + q
        keys = keys.transpose(2, 3).reshape(nl, bsz * lm, kvh, hd)
        values = values.transpose(2, 3).reshape(nl, bsz * lm, kvh, hd)
        self.pool.keys.index_copy_(1, slots, keys.index_select(1, sel))
        self.pool.values.index_copy_(1, slots, values.index_select(1, sel))
        self.pool.hidden.index_copy_(0, slots, hidden.reshape(bsz * lm, -1).index_select(0, sel))


def seq_tokens(path: list[TrieNode], start: int) -> list[int]:
    """Token ids of ``path[start:]``."""
    return [nd.token for nd in path[start:]]
