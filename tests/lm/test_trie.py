"""Property tests of the prefix trie: node count, sharing, eviction invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from saffron.lm.trie import PENDING, Trie

seqs = st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=8), min_size=1, max_size=12)


def distinct_prefixes(items: list[list[int]]) -> set[tuple[int, ...]]:
    return {tuple(s[:k]) for s in items for k in range(1, len(s) + 1)}


@settings(max_examples=200, deadline=None)
@given(items=seqs)
def test_one_node_per_distinct_prefix(items: list[list[int]]) -> None:
    trie = Trie()
    for s in items:
        path, start = trie.walk(s, create=True)
        assert [n.token for n in path] == s
        assert [n.depth for n in path] == list(range(1, len(s) + 1))
        for n in path[start:]:
            n.slot = 1
    assert trie.size == len(distinct_prefixes(items))
    # walking again creates nothing
    for s in items:
        _, start = trie.walk(s, create=True)
        assert start == len(s)


@settings(max_examples=200, deadline=None)
@given(items=seqs, keep=st.integers(0, 11), n=st.integers(0, 40))
def test_eviction_only_takes_unprotected_leaves(items: list[list[int]], keep: int, n: int) -> None:
    trie = Trie()
    slot = 0
    for s in items:
        trie.next_tick()
        path, start = trie.walk(s, create=True)
        for node in path[start:]:
            slot += 1
            node.slot = slot
    protected = items[keep % len(items)]
    tick = trie.next_tick()
    trie.walk(protected, create=False)
    size = trie.size
    freed = trie.evict(n, tick)
    assert len(freed) == min(n, size - len(set(distinct_prefixes([protected]))))
    assert len(set(freed)) == len(freed)
    assert trie.size == size - len(freed)
    path, _ = trie.walk(protected, create=False)
    assert len(path) == len(protected)  # the protected sequence survives whole
    for node in trie.nodes():  # the structure stays a tree of stored nodes
        assert node.slot != PENDING
        assert node.parent is not None and node.parent.children[node.token] is node
