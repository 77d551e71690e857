"""The gold set: its split is by prompt and fixed, its test part is handed out only by name,
and what is committed is well formed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from saffron.data.gold import (
    LABELS,
    GoldItem,
    gold_prompt_ids,
    load_gold,
    split_of,
    write_gold,
)
from saffron.errors import SaffronError


def _item(iid: str, pid: str, label: str = "refusal") -> GoldItem:
    return GoldItem(iid, pid, "p", "", "a", label, "", "s:p:c", split_of(pid))


def test_split_is_by_prompt_and_stable() -> None:
    ids = [f"advbench-{i:04d}" for i in range(2000)]
    parts = Counter(split_of(p) for p in ids)
    assert abs(parts["train"] / 2000 - 0.5) < 0.05
    assert abs(parts["validation"] / 2000 - 0.2) < 0.05
    assert [split_of(p) for p in ids[:50]] == [split_of(p) for p in ids[:50]]
    # the held-out benign set is never trained on: always test
    assert {split_of(f"benign-eval-{i:04d}") for i in range(200)} == {"test"}


def test_load_gold_needs_named_parts(tmp_path: Path) -> None:
    path = tmp_path / "gold.json"
    items = [_item(f"g{i}", f"advbench-{i:04d}") for i in range(40)]
    write_gold(items, path)
    with pytest.raises(SaffronError, match="name the gold parts"):
        load_gold(path=path)
    with pytest.raises(SaffronError, match="unknown gold part 'dev'"):
        load_gold("dev", path=path)  # type: ignore[arg-type]
    train = load_gold("train", path=path)
    assert train and all(i.split == "train" for i in train)
    assert gold_prompt_ids("test", path=path) == {i.prompt_id for i in items if i.split == "test"}


def test_write_gold_refuses_bad_items(tmp_path: Path) -> None:
    with pytest.raises(SaffronError, match="unique ids"):
        write_gold([_item("g1", "a"), _item("g1", "b")], tmp_path / "g.json")
    with pytest.raises(SaffronError, match="unknown labels"):
        write_gold([_item("g1", "a", "unsafe")], tmp_path / "g.json")
    assert not (tmp_path / "g.json").exists()


def test_committed_gold_set() -> None:
    items = load_gold("train", "validation", "test")
    assert len(items) >= 480
    assert {i.label for i in items} <= set(LABELS)
    assert all(i.split == split_of(i.prompt_id) for i in items)
    by_prompt: dict[str, set[str]] = {}
    for i in items:
        by_prompt.setdefault(i.prompt_id, set()).add(i.split)
    assert all(len(s) == 1 for s in by_prompt.values())
    assert len(load_gold("test")) >= 150
