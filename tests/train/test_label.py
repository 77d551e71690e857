"""`saffron label`: the token-level reward dataset, its format, resuming, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_toys import EOS, RESPONSES, make_guard, write_corpus

from saffron.cli import main
from saffron.errors import SaffronError
from saffron.lm.vocab import vocab_hash
from saffron.train.label import (
    LABEL_FORMAT,
    LabelConfig,
    label_corpus,
    load_tokenizer,
    read_label_sets,
    read_labels,
    read_shard,
    shard_path,
)

CFG = LabelConfig(shard_size=2, batch_size=2)


def run_label(
    guard, corpus: Path, out: Path, cfg: LabelConfig = CFG, weights: str = "w0"
) -> dict[str, object]:
    tok = guard.backend.loaded.tokenizer
    return label_corpus(
        guard,
        tok,
        corpus,
        out,
        cfg,
        guard_name="tiny-guard",
        policy_name="tiny-random-llama",
        guard_weights=weights,
    )


def test_every_prefix_is_labelled_including_eos(guard, corpus, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    meta = run_label(guard, corpus(), out)
    assert meta["format"] == LABEL_FORMAT and meta["complete"] is True
    assert meta["count"] == len(RESPONSES) and meta["shards"] == 3
    assert meta["policy_vocab_hash"] == vocab_hash(guard.backend.loaded.tokenizer)
    _, items = read_labels(out)
    assert [it.id for it in items] == [f"p0-{i:03d}/policy" for i in range(len(RESPONSES))]
    fresh = make_guard()
    for it, (prompt, harmful, _, ended) in zip(items, RESPONSES, strict=True):
        tok = fresh.backend.loaded.tokenizer
        assert it.prompt == tuple(tok.encode(prompt, add_special_tokens=False))
        assert it.harmful == harmful and it.kind == "policy"
        assert (it.response[-1] == EOS) == ended
        assert it.rewards.dtype == np.float32 and it.rewards.shape == (len(it.response),)
        want = fresh.score_prefixes([it.sequence()])[0]
        assert torch.allclose(torch.from_numpy(it.rewards), want, atol=1e-5)


def test_rerun_keeps_done_shards_and_computes_missing_ones(guard, corpus, tmp_path) -> None:
    out = tmp_path / "labels"
    path = corpus()
    run_label(guard, path, out)
    kept = shard_path(out, 0).stat()
    redo = shard_path(out, 1)
    want = read_shard(redo)
    redo.unlink()
    again = make_guard()
    meta = run_label(again, path, out)
    assert meta["complete"] is True
    assert shard_path(out, 0).stat().st_mtime_ns == kept.st_mtime_ns  # not rewritten
    assert again.calls == sum(len(it.response) for it in want)  # only the missing shard
    got = read_shard(redo)
    assert [it.id for it in got] == [it.id for it in want]
    assert all(np.allclose(a.rewards, b.rewards, atol=1e-5) for a, b in zip(got, want, strict=True))


def test_empty_corpus_is_refused(guard, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "labels"
    with pytest.raises(SaffronError) as err:
        run_label(guard, empty, out)
    assert str(err.value) == f"corpus file {empty} is empty; nothing to label"
    assert not out.exists()


def test_cli_empty_corpus_exits_2_before_loading_models(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = tmp_path / "labels"
    assert main(["label", "--corpus", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"saffron: error: corpus file {empty} is empty; nothing to label"
    assert not out.exists()


def test_missing_corpus_is_refused(guard, tmp_path: Path) -> None:
    with pytest.raises(SaffronError, match="does not exist"):
        run_label(guard, tmp_path / "nope.jsonl", tmp_path / "labels")


def test_corrupt_shard_is_named_and_left_alone(guard, corpus, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    path = corpus()
    run_label(guard, path, out)
    bad = shard_path(out, 1)
    bad.write_bytes(b"\x00garbage")
    shard_path(out, 2).unlink()
    meta_before = (out / "meta.json").read_text()
    with pytest.raises(SaffronError) as err:
        run_label(make_guard(), path, out)
    msg = str(err.value)
    assert msg.startswith(f"label shard {bad} is corrupt (")
    assert msg.endswith("); delete it to redo it")
    assert bad.read_bytes() == b"\x00garbage"  # nothing overwritten
    assert not shard_path(out, 2).exists()  # nothing computed either
    assert (out / "meta.json").read_text() == meta_before
    with pytest.raises(SaffronError, match=f"label shard {bad} is corrupt"):
        read_labels(out)


def test_labels_of_another_corpus_are_not_mixed(guard, corpus, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    run_label(guard, corpus(), out)
    other = corpus(copies=2)  # same path, different content
    with pytest.raises(SaffronError) as err:
        run_label(make_guard(), other, out)
    assert str(err.value) == (
        f"{out} holds labels made with a different corpus_sha256, count; "
        "choose another --out or delete it"
    )


def test_labels_of_retrained_guard_weights_are_not_mixed(guard, corpus, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    run_label(guard, corpus(), out, weights="w0")
    shards = sorted(p.read_bytes() for p in out.glob("*.safetensors"))
    with pytest.raises(SaffronError) as err:
        run_label(make_guard(), corpus(), out, weights="w1")
    assert str(err.value) == (
        f"{out} holds labels made with a different guard_weights; choose another --out or delete it"
    )
    assert sorted(p.read_bytes() for p in out.glob("*.safetensors")) == shards


def test_incomplete_labels_are_not_read(guard, corpus, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    run_label(guard, corpus(), out)
    meta = json.loads((out / "meta.json").read_text())
    meta["complete"] = False
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SaffronError) as err:
        read_labels(out)
    assert str(err.value) == f"the labels in {out} are incomplete; rerun `saffron label`"


def test_label_sets_are_read_as_one(guard, tmp_path: Path) -> None:
    first = write_corpus(tmp_path / "a.jsonl", RESPONSES[:3])
    second = write_corpus(tmp_path / "b.jsonl", RESPONSES[3:], copies=2)
    second.write_text(second.read_text().replace('"p0-', '"v0-').replace('"p1-', '"v1-'))
    run_label(guard, first, tmp_path / "la")
    run_label(guard, second, tmp_path / "lb")
    meta, items = read_label_sets([tmp_path / "la", tmp_path / "lb"])
    assert meta["count"] == len(items) == 3 + 4
    assert meta["folders"] == ["la", "lb"]
    assert [it.id for it in items[:3]] == [f"p0-{i:03d}/policy" for i in range(3)]
    assert items[3].id.startswith("v0-")


def test_label_sets_of_other_guard_weights_or_repeated_items_are_refused(
    guard, tmp_path: Path
) -> None:
    first = write_corpus(tmp_path / "a.jsonl", RESPONSES[:2])
    run_label(guard, first, tmp_path / "la")
    run_label(guard, first, tmp_path / "same")
    with pytest.raises(SaffronError, match="repeat 2 item"):
        read_label_sets([tmp_path / "la", tmp_path / "same"])
    run_label(guard, first, tmp_path / "lw", weights="w1")
    with pytest.raises(SaffronError, match=r"differ from those in .* in guard_weights"):
        read_label_sets([tmp_path / "la", tmp_path / "lw"])
    with pytest.raises(SaffronError, match="no label folder given"):
        read_label_sets([])


def test_load_tokenizer_of_a_trained_policy_is_its_base_s(tmp_path: Path) -> None:
    """`saffron label --policy smol-aligned` labels the tokens of an adapter policy: its
    tokenizer is the base's, found through the adapter's meta.json without loading weights."""
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    (folder / "meta.json").write_text(
        json.dumps({"kind": "policy", "base": "tiny-random-llama"}), encoding="utf-8"
    )
    base = load_tokenizer("tiny-random-llama")
    assert vocab_hash(load_tokenizer(str(folder))) == vocab_hash(base)
    (folder / "meta.json").write_text(json.dumps({"kind": "policy"}), encoding="utf-8")
    with pytest.raises(SaffronError, match=r"meta\.json is corrupt"):
        load_tokenizer(str(folder))
