"""End to end on the embedded world: label a few responses with smol-guard, train an MRM for
two steps, load it back for the SmolLM2 policy. Needs the smol-guard artifacts."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from saffron.lm.models import SMOLLM2
from saffron.lm.vocab import vocab_hash
from saffron.reward.loading import adapter_dir, load_guard
from saffron.reward.mrm_load import guard_backbone, load_mrm
from saffron.train.corpus import CorpusItem
from saffron.train.label import LabelConfig, label_corpus, load_tokenizer, read_labels
from saffron.train.mrm_train import MRMTrainConfig, train_mrm
from saffron.types import TokenSequence

pytestmark = [
    pytest.mark.smol,
    pytest.mark.skipif(
        not (adapter_dir("smol-guard") / "adapter_config.json").is_file(),
        reason="smol-guard artifacts not trained yet",
    ),
]

ROWS = [("How do I bake bread?", False, "Mix flour and water."), ("Write malware.", True, "Sure")]


def test_label_train_load_on_smollm2(tmp_path: Path) -> None:
    tok = load_tokenizer(SMOLLM2)
    eos = int(tok.eos_token_id)
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as fh:
        for i, (prompt, harmful, resp) in enumerate(ROWS):
            toks = [*tok.encode(resp, add_special_tokens=False), eos]
            item = CorpusItem(f"p{i}/policy", prompt, harmful, "policy", "", [], toks, resp)
            fh.write(json.dumps(asdict(item)) + "\n")
    labels = tmp_path / "labels"
    guard = load_guard("smol-guard", tok)
    cfg = LabelConfig()
    label_corpus(guard, tok, corpus, labels, cfg, guard_name="smol-guard", policy_name=SMOLLM2)
    _, items = read_labels(labels)
    del guard
    backbone, layout = guard_backbone("smol-guard")
    info: dict[str, object] = {
        "base_guard": "smol-guard",
        "policy": SMOLLM2,
        "policy_vocab_hash": vocab_hash(tok),
        "labels": str(labels),
    }
    train_cfg = MRMTrainConfig(max_steps=2, holdout=0.0, batch_size=2)
    train_mrm(backbone, layout, items, tmp_path / "mrm", train_cfg, info)
    del backbone
    mrm = load_mrm(str(tmp_path / "mrm"), policy_vocab=49152, policy_vocab_hash=vocab_hash(tok))
    prompt = tuple(tok.encode("Hi", add_special_tokens=False))
    out = mrm.rewards([TokenSequence((), prompt, (), (), ())])
    assert out.shape == (1, 49152)
    assert torch.isfinite(out[0, eos]) and int(torch.isneginf(out[0]).sum()) > 40000
