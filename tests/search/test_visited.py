"""Search-visited states (``keep_pool`` and :mod:`saffron.train.visited`): the final pool is
what the search ranked, in its order and with its rewards; visiting writes it as corpus items
under the harmful start, resumes without searching a prompt twice, and refuses bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from search_toys import EOS, frac_reward

from saffron.data import PromptRow
from saffron.errors import SaffronError
from saffron.search import SearchConfig, run_search
from saffron.train.corpus import read_corpus
from saffron.train.visited import VISITED, VisitConfig, pool_items, visit


@pytest.fixture
def table(ids: dict[str, int]) -> dict[int, float]:
    return {ids["a"]: 0.4, ids["b"]: 0.3, ids["c"]: 0.25, EOS: 0.05}


def test_keep_pool_lists_the_final_pool_best_first(models, ids, table, prompt) -> None:
    reward = frac_reward(frozenset({ids["c"]}))
    world = models.world(reward, table=table)
    cfg = SearchConfig(budget=4, max_new_tokens=4, min_new_tokens=4, options=(("keep_pool", True),))
    result = run_search("saffron", world, prompt, cfg)
    pool = result.extra["pool"]
    assert len(pool) == 4
    assert tuple(pool[0]["tokens"]) == result.generated == (ids["c"],) * 4
    rewards = [p["reward"] for p in pool]
    assert rewards == sorted(rewards, reverse=True)
    for entry in pool:  # each reward is the MRM's estimate of that very sequence
        assert entry["reward"] == pytest.approx(reward(tuple(entry["tokens"])))
    # without the option, records stay as they were
    plain = run_search(
        "saffron",
        models.world(reward, table=table),
        prompt,
        SearchConfig(budget=4, max_new_tokens=4, min_new_tokens=4),
    )
    assert "pool" not in plain.extra


def test_pool_items_need_a_kept_pool(models, ids, table, prompt) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    result = run_search(
        "saffron", world, prompt, SearchConfig(budget=2, max_new_tokens=3, min_new_tokens=3)
    )
    with pytest.raises(SaffronError, match="kept no pool"):
        pool_items(PromptRow("p1", "x"), result, world.policy.chat)


def test_visit_writes_pools_under_the_start_and_resumes(models, ids, table, tmp_path: Path) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    chat = world.policy.chat
    rows = [
        PromptRow("s-1", "How do I stay safe?"),
        PromptRow("s-2", "Tell me"),
        PromptRow("s-3", "x"),
    ]
    starts = {"s-1": tuple(chat.encode("Sure, step")), "s-2": tuple(chat.encode("Ok"))}
    cfg = VisitConfig(SearchConfig(budget=3, max_new_tokens=4, min_new_tokens=4), prefill_tokens=4)
    path = tmp_path / "visited.jsonl"
    items = visit(world, rows, starts, path, cfg)
    assert {it.id.split(":visited:")[0] for it in items} == {"s-1", "s-2"}  # s-3: no start
    for it in items:
        assert it.kind == VISITED and it.harmful
        assert tuple(it.prefill_tokens) == starts[it.id.split(":")[0]][:4]
        assert len(it.response_tokens) == 4 and it.response == chat.decode(it.response_tokens)
    firsts = [it for it in items if it.id.endswith(":visited:visited:0")]  # tag: the stem
    assert all(it.response_tokens == [ids["c"]] * 4 for it in firsts)
    # a second run searches nothing again: the file is unchanged, calls stay at zero
    before = path.read_bytes()
    again = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    assert visit(again, rows, starts, path, cfg) == read_corpus(path)
    assert path.read_bytes() == before
    assert again.mrm is not None and again.mrm.calls == 0


def test_visit_refuses_a_world_without_an_mrm(models, ids, table, tmp_path: Path) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table, mrm=False)
    with pytest.raises(SaffronError, match="visiting needs an MRM"):
        visit(world, [PromptRow("s-1", "x")], {"s-1": (1,)}, tmp_path / "v.jsonl", VisitConfig())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefill_tokens": -1}, "prefill_tokens must be ≥ 0, got -1"),
        ({"concurrency": 0}, "concurrency must be ≥ 1, got 0"),
    ],
)
def test_bad_visit_config(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(SaffronError, match=message):
        VisitConfig(**kwargs)
