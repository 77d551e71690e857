"""Prefix tree over token ids: which prefixes are cached, and where their KV lives.

The trie stores *slot indices* into a tensor pool (see :mod:`saffron.lm.kvpool`), never tensors.
A node at depth d stands for the prefix of length d that ends with ``node.token``; its slot holds
that position's key/value (every layer) and final hidden state. Sequences sharing a prefix share
its nodes, so the prefix is computed once (paper, Proposition 2: time
O(Σ|s_i|² − max_σ Σ LCP²), space O(Σ|s_i| − max_σ Σ LCP)).

Node states: ``slot >= 0`` — computed and stored; ``slot == PENDING`` — inserted by the call in
progress and not yet computed. Pending nodes exist only inside one backend call.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

PENDING = -1


class TrieNode:
    """One cached position. ``children`` maps the next token id to its node."""

    __slots__ = ("children", "depth", "last_used", "parent", "slot", "token")

    def __init__(self, token: int, parent: TrieNode | None, depth: int) -> None:
        self.token = token
        self.parent = parent
        self.depth = depth
        self.children: dict[int, TrieNode] = {}
        self.slot = PENDING
        self.last_used = 0


class Trie:
    """A token-id prefix tree with LRU eviction of leaves.

    Not thread-safe: one backend owns one trie.
    """

    def __init__(self) -> None:
        self.root = TrieNode(-1, None, 0)
        self.root.slot = 0  # the root is the empty prefix; never stored, never evicted
        self.size = 0  # nodes excluding the root
        self.tick = 0

    def walk(self, tokens: Sequence[int], *, create: bool) -> tuple[list[TrieNode], int]:
        """Nodes along ``tokens`` (one per token) and the index of the first created node.

        With ``create=False`` the list stops at the longest stored-or-pending prefix and the
        index equals its length. With ``create=True`` missing nodes are inserted as PENDING and
        the index is where they begin (``len(tokens)`` if none was created). Touches every node
        on the path with the current tick (LRU).
        """
        node = self.root
        path: list[TrieNode] = []
        created_at = len(tokens)
        tick = self.tick
        for i, tok in enumerate(tokens):
            child = node.children.get(tok)
            if child is None:
                if not create:
                    return path, len(path)
                created_at = min(created_at, i)
                child = TrieNode(tok, node, node.depth + 1)
                node.children[tok] = child
                self.size += 1
            child.last_used = tick
            path.append(child)
            node = child
        return path, created_at

    def next_tick(self) -> int:
        self.tick += 1
        return self.tick

    def leaves(self) -> Iterator[TrieNode]:
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            else:
                yield node

    def remove_leaf(self, node: TrieNode) -> None:
        """Detach a leaf (it must have no children)."""
        assert not node.children and node.parent is not None
        del node.parent.children[node.token]
        node.parent = None
        self.size -= 1

    def evict(self, n: int, protected_tick: int) -> list[int]:
        """Remove up to ``n`` stored nodes, least recently used leaves first; return their slots.

        Nodes touched at ``protected_tick`` (the call in progress) and pending nodes are never
        removed. A parent whose last child goes becomes a leaf and a candidate in turn; since a
        parent is touched whenever a child is, it is never older than its children.
        """

        def evictable(nd: TrieNode) -> bool:
            return nd.last_used != protected_tick and nd.slot != PENDING and not nd.children

        heap = [(nd.last_used, id(nd), nd) for nd in self.leaves() if evictable(nd)]
        heapq.heapify(heap)
        freed: list[int] = []
        while heap and len(freed) < n:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            freed.append(leaf.slot)
            self.remove_leaf(leaf)
            if parent is not None and parent is not self.root and evictable(parent):
                heapq.heappush(heap, (parent.last_used, id(parent), parent))
        return freed

    def clear(self) -> list[int]:
        """Drop every node; return all their slots."""
        slots = [nd.slot for nd in self.nodes() if nd.slot != PENDING]
        self.root.children = {}
        self.size = 0
        return slots

    def nodes(self) -> Iterator[TrieNode]:
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            yield node

    def drop_pending(self, nodes: Iterable[TrieNode]) -> None:
        """Undo insertion of pending nodes (after a failed call), deepest first."""
        for node in sorted(nodes, key=lambda nd: -nd.depth):
            if node.slot == PENDING and not node.children and node.parent is not None:
                self.remove_leaf(node)


@dataclass
class CallPlan:
    """Which nodes one backend call must compute, and in which wave.

    ``paths[i]`` is sequence i's node path; ``segments`` holds (wave, path, start): the nodes
    ``path[start:]`` are computed in wave ``wave`` after their stored prefix ``path[:start]``;
    ``reused`` counts positions the call found in the trie (stored, or pending from a sequence
    inserted earlier in the same call).
    """

    paths: list[list[TrieNode]]
    created: list[TrieNode] = field(default_factory=list)
    segments: list[tuple[int, list[TrieNode], int]] = field(default_factory=list)
    reused: int = 0

    def waves(self) -> list[list[tuple[list[TrieNode], int]]]:
        """The segments grouped by wave, in wave order: [(path, start), …] per wave."""
        n = max((w for w, _, _ in self.segments), default=-1) + 1
        out: list[list[tuple[list[TrieNode], int]]] = [[] for _ in range(n)]
        for w, path, start in self.segments:
            out[w].append((path, start))
        return out


def plan_call(trie: Trie, seqs: Sequence[Sequence[int]]) -> CallPlan:
    """Insert every sequence into ``trie`` (missing nodes PENDING) and plan their computation.

    Each missing node is computed once even when several sequences share it: the sequence that
    inserts a node first owns it, and sequences are inserted longest first, so a long sequence
    owns the shared stem and the shorter ones branching off it wait one wave (prefixes of one
    answer: 2 waves, not one per prefix). A segment whose parent is pending runs one wave after
    the parent's. Used by the backend and, on a trie of its own, by :mod:`saffron.lm.ledger`.
    """
    plan = CallPlan(paths=[[] for _ in seqs])
    wave_of: dict[int, int] = {}
    for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i])):
        path, start = trie.walk(seqs[i], create=True)
        plan.paths[i] = path
        plan.reused += start
        if start == len(path):
            continue
        parent = path[start - 1] if start else None
        wave = wave_of[id(parent)] + 1 if parent is not None and parent.slot == PENDING else 0
        for nd in path[start:]:
            wave_of[id(nd)] = wave
        plan.created.extend(path[start:])
        plan.segments.append((wave, path, start))
    return plan
