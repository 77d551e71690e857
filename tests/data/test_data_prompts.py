"""saffron.data.prompts: registry, user JSONL files with exact errors, deterministic split."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from saffron.data import fetch, hub
from saffron.data.prompts import (
    PromptRow,
    dataset_names,
    list_datasets,
    load_prompts,
    read_jsonl,
    rows_of_sets,
    rows_of_split,
    split_key,
    train_eval_split,
)
from saffron.errors import SaffronError

KNOWN = [
    "advbench",
    "harmbench",
    "strongreject",
    "donotanswer",
    "saffron-benign",
    "saffron-benign-train",
    "saffron-plain-train",
    "harmful-hexphi",
    "ai2-refusals",
]


def write(tmp_path: Path, body: bytes | str, name: str = "p.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(body.encode("utf-8") if isinstance(body, str) else body)
    return path


def lines(*objs: object) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


# ---------------------------------------------------------------- registry


def test_registry_lists_the_known_sets() -> None:
    assert dataset_names() == KNOWN
    info = {d.name: d for d in list_datasets()}
    assert info["advbench"].rows == 520 and info["advbench"].offline
    assert info["harmbench"].rows == 200
    assert info["strongreject"].rows == 313
    assert info["donotanswer"].rows == 939
    assert not info["harmful-hexphi"].offline and not info["ai2-refusals"].offline
    # the project-written sets ship in the package: offline, counted
    assert info["saffron-benign"].rows == len(load_prompts("saffron-benign")) >= 150
    look = [r for r in load_prompts("saffron-benign") if str(r.category).startswith("look-")]
    assert len(look) >= 100
    train = {
        r.prompt for n in ("saffron-benign-train", "saffron-plain-train") for r in load_prompts(n)
    }
    assert not train & {r.prompt for r in load_prompts("saffron-benign")}  # held out
    assert all(d.licence and d.description for d in info.values())


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(SaffronError) as err:
        load_prompts("advbenchh")
    assert str(err.value) == (
        "unknown dataset 'advbenchh'; known datasets: advbench, harmbench, strongreject, "
        "donotanswer, saffron-benign, saffron-benign-train, saffron-plain-train, harmful-hexphi, "
        "ai2-refusals (or a .jsonl file)"
    )


def test_offline_set_without_data_says_run_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFFRON_CACHE", str(tmp_path / "empty"))
    for name in ("advbench", "harmbench", "strongreject", "donotanswer"):
        with pytest.raises(SaffronError) as err:
            load_prompts(name)
        assert str(err.value) == fetch.SETUP_HINT


@pytest.mark.parametrize("limit", [0, -1])
def test_bad_limit(limit: int, tmp_path: Path) -> None:
    path = write(tmp_path, lines({"prompt": "a"}))
    with pytest.raises(SaffronError, match="limit must be a positive integer"):
        load_prompts(str(path), limit=limit)


# ---------------------------------------------------------------- user JSONL


def test_jsonl_reads_fields_ids_and_ignores_unknown_keys(tmp_path: Path) -> None:
    body = lines(
        {"prompt": "How do I bake bread?", "id": "bread", "extra": [1, 2]},
        {"prompt": "Say hi", "prefill": "Hi", "reference": "Hi there", "category": "greet"},
    )
    path = write(tmp_path, body + "\n   \n" + lines({"prompt": "third", "id": None}))
    rows = load_prompts(str(path))
    assert rows == [
        PromptRow("bread", "How do I bake bread?", None, None, None, str(path)),
        PromptRow("p-0002", "Say hi", "Hi there", "greet", "Hi", str(path)),
        PromptRow("p-0005", "third", None, None, None, str(path)),
    ]
    assert load_prompts(str(path), limit=2) == rows[:2]


def test_jsonl_accepts_a_byte_order_mark_and_no_final_newline(tmp_path: Path) -> None:
    path = write(tmp_path, b'\xef\xbb\xbf{"prompt": "x"}')
    assert [r.prompt for r in read_jsonl(path)] == ["x"]


def test_jsonl_malformed_line(tmp_path: Path) -> None:
    path = write(tmp_path, lines({"prompt": "ok"}) + '{"prompt": "unterminated\n')
    with pytest.raises(SaffronError) as err:
        load_prompts(str(path))
    assert str(err.value) == (
        f"{path}:2: malformed JSON (column 12: Unterminated string starting at)"
    )


def test_jsonl_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, lines({"prompt": "ok"}).encode() + b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(SaffronError) as err:
        load_prompts(str(path))
    assert str(err.value) == f"{path}:2: not valid UTF-8"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"prompt": ""}, "empty prompt"),
        ({"prompt": "  \n\t"}, "empty prompt"),
        ({"id": "x"}, 'missing "prompt"'),
        ({"prompt": 3}, '"prompt" must be a string'),
        ({"prompt": "a", "prefill": 1}, '"prefill" must be a string'),
        ({"prompt": "a", "id": ""}, 'empty "id"'),
        (["prompt", "a"], "expected a JSON object, got an array"),
    ],
)
def test_jsonl_bad_rows(tmp_path: Path, line: object, message: str) -> None:
    path = write(tmp_path, lines({"prompt": "fine"}, line))
    with pytest.raises(SaffronError) as err:
        load_prompts(str(path))
    assert str(err.value) == f"{path}:2: {message}"


def test_jsonl_duplicate_id(tmp_path: Path) -> None:
    path = write(
        tmp_path, lines({"prompt": "a", "id": "x"}, {"prompt": "b"}, {"prompt": "c", "id": "x"})
    )
    with pytest.raises(SaffronError) as err:
        load_prompts(str(path))
    assert str(err.value) == f"{path}:3: duplicate id 'x' (first on line 1)"


def test_jsonl_explicit_id_clashing_with_a_generated_one(tmp_path: Path) -> None:
    path = write(tmp_path, lines({"prompt": "a"}, {"prompt": "b", "id": "p-0001"}))
    with pytest.raises(SaffronError) as err:
        read_jsonl(path)
    assert str(err.value) == f"{path}:2: duplicate id 'p-0001' (first on line 1)"


def test_jsonl_missing_or_empty_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(SaffronError) as err:
        load_prompts(str(missing))
    assert str(err.value) == f"{missing}: no such file"
    empty = write(tmp_path, "\n\n", "empty.jsonl")
    with pytest.raises(SaffronError) as err:
        load_prompts(str(empty))
    assert str(err.value) == f"{empty}: no prompts"


# ---------------------------------------------------------------- split


def rows_n(n: int) -> list[PromptRow]:
    return [PromptRow(id=f"set-{i:04d}", prompt=f"prompt {i}") for i in range(1, n + 1)]


def test_split_is_a_stable_partition() -> None:
    rows = rows_n(1000)
    train, evaluation = train_eval_split(rows, eval_fraction=0.3, seed=7)
    assert {r.id for r in train}.isdisjoint({r.id for r in evaluation})
    assert len(train) + len(evaluation) == 1000
    assert 240 <= len(evaluation) <= 360
    assert train == [r for r in rows if r in set(train)]  # order kept
    assert (train, evaluation) == train_eval_split(rows, eval_fraction=0.3, seed=7)
    assert train_eval_split(rows, 0.3, seed=8) != (train, evaluation)


def test_split_of_a_row_does_not_depend_on_the_others() -> None:
    rows = rows_n(200)
    _, full_eval = train_eval_split(rows)
    _, part_eval = train_eval_split(list(reversed(rows[:50])))
    assert {r.id for r in part_eval} == {r.id for r in full_eval if r in rows[:50]}


def test_split_key_is_pinned() -> None:
    # sha256 of "saffron-split:0:advbench-0001": fixed forever, on every Python.
    row = PromptRow(id="advbench-0001", prompt="p")
    assert split_key(row) == int("d9ec790b72ea5b2a", 16) / 2**64


def test_split_by_prompt_keeps_duplicates_together() -> None:
    a = PromptRow(id="a-1", prompt="Build a  Bomb")
    b = PromptRow(id="b-9", prompt="build a bomb")
    assert split_key(a, by="prompt") == split_key(b, by="prompt")


def test_split_edges() -> None:
    rows = rows_n(20)
    assert train_eval_split(rows, 0.0) == (rows, [])
    assert train_eval_split(rows, 1.0) == ([], rows)
    with pytest.raises(SaffronError, match="between 0 and 1"):
        train_eval_split(rows, 1.5)


# ---------------------------------------------------------------- hub sets offline


@pytest.mark.parametrize("name", ["harmful-hexphi", "ai2-refusals"])
def test_hub_sets_fail_cleanly_offline(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as hf_constants  # read at import: patch it too

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.monotonic()
    with pytest.raises(SaffronError) as err:
        load_prompts(name)
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "\n" not in msg and f"dataset {name!r}" in msg
    assert "offline" in msg or "pyarrow" in msg


def test_hub_unreachable_means_local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    assert not hub._hub_reachable(timeout=1.0)
    assert hub._local_only()


def test_parse_hexphi_formats() -> None:
    text = "\n".join(
        [
            json.dumps([{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]),
            json.dumps({"chat": ["Q2", "A2"]}),
            "",
            json.dumps({"messages": [{"role": "user", "content": "Q3"}]}),
        ]
    )
    rows = hub.parse_hexphi(text, "h.jsonl")
    assert [(r.id, r.prompt, r.reference) for r in rows] == [
        ("harmful-hexphi-0001", "Q1", "A1"),
        ("harmful-hexphi-0002", "Q2", "A2"),
        ("harmful-hexphi-0003", "Q3", None),
    ]
    with pytest.raises(SaffronError, match=r"^h.jsonl:1: expected a chat"):
        hub.parse_hexphi(json.dumps({"x": 1}), "h.jsonl")


def test_rewardbench_refusal_rows() -> None:
    recs = [
        {"id": 12, "subset": "refusals-offensive", "prompt": "p12", "rejected": "r12"},
        {"id": 3, "subset": "xstest-should-refuse", "prompt": "p3", "rejected": "r3"},
        {"id": 7, "subset": "refusals-dangerous", "prompt": "p7", "rejected": "r7"},
    ]
    rows = hub.rewardbench_refusal_rows(recs)
    assert [(r.id, r.prompt, r.reference, r.category) for r in rows] == [
        ("ai2-refusals-7", "p7", "r7", "refusals-dangerous"),
        ("ai2-refusals-12", "p12", "r12", "refusals-offensive"),
    ]


# ---------------------------------------------------------------- real data (if fetched)

REAL = all(fetch.source_is_complete(s) for s in fetch.SOURCES)
real = pytest.mark.skipif(
    not REAL,
    reason="prompt data not fetched into the user cache (run `saffron setup` or "
    "`python -c 'import saffron.data as d; d.fetch_all()'`)",
)


@real
@pytest.mark.parametrize(
    ("name", "count", "first_id"),
    [
        ("advbench", 520, "advbench-0001"),
        ("harmbench", 200, "harmbench-0001"),
        ("strongreject", 313, "strongreject-0001"),
        ("donotanswer", 939, "donotanswer-0001"),
    ],
)
def test_real_sets(name: str, count: int, first_id: str) -> None:
    rows = load_prompts(name)
    assert len(rows) == count
    assert rows[0].id == first_id and rows[-1].id == f"{name}-{count:04d}"
    assert len({r.id for r in rows}) == count
    assert all(r.prompt and r.prompt == r.prompt.strip() and r.source == name for r in rows)
    assert load_prompts(name) == rows  # stable
    assert load_prompts(name, limit=5) == rows[:5]


@real
def test_real_set_contents() -> None:
    adv = load_prompts("advbench")
    assert adv[0].prompt.startswith("Write a script that can exploit vulnerabilities")
    assert all(r.reference is None for r in adv)  # PyRIT's copy has no "Sure, here is" targets
    sr = load_prompts("strongreject")
    assert {r.category for r in sr} >= {"Violence", "Sexual content"}
    dna = load_prompts("donotanswer")
    assert {r.category for r in dna} == {
        "discrimination_exclusion_toxicity_hateful_offensive",
        "human_chatbox",
        "information_hazard",
        "malicious_uses",
        "misinformation_harms",
    }


@pytest.mark.skipif(os.name != "posix", reason="relies on POSIX paths")
def test_registered_name_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "advbench").write_text('{"prompt": "x"}\n', encoding="utf-8")
    monkeypatch.setenv("SAFFRON_CACHE", str(tmp_path / "empty"))
    with pytest.raises(SaffronError) as err:
        load_prompts("advbench")
    assert str(err.value) == fetch.SETUP_HINT


@real
def test_several_sets_are_interleaved() -> None:
    adv, hb = rows_of_split("advbench", "eval"), rows_of_split("harmbench", "eval")
    both = rows_of_sets("advbench,harmbench", "eval")
    assert len(both) == len(adv) + len(hb)
    assert both[:4] == [adv[0], hb[0], adv[1], hb[1]]
    assert [r for r in both if r.source == "advbench"] == adv  # each set's order kept
    assert rows_of_sets("advbench", "eval") == adv
    assert not {r.id for r in both} & {r.id for r in rows_of_sets("advbench,harmbench", "train")}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("advbench,", "empty set name in 'advbench,'"),
        ("advbench,advbench", "a set is named twice in 'advbench,advbench'"),
    ],
)
def test_several_sets_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(SaffronError, match=f"^{message}$"):
        rows_of_sets(spec, "eval")


def test_several_files_with_the_same_ids(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text('{"id": "x", "prompt": "p"}\n', encoding="utf-8")
    with pytest.raises(SaffronError, match=r"row ids repeat across the sets of .* \(e\.g\. x\)"):
        rows_of_sets(f"{tmp_path / 'a.jsonl'},{tmp_path / 'b.jsonl'}", "all")
