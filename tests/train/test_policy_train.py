"""`saffron train-policy`: the data mix, the loss, loading the result, and every bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from saffron.cli import main
from saffron.data import PromptRow
from saffron.errors import SaffronError
from saffron.lm.adapters import fingerprint
from saffron.lm.models import load_model
from saffron.lm.policy import bulk_greedy, make_policy
from saffron.search.base import SearchConfig
from saffron.search.decoding import decode_batch
from saffron.train.policy_train import (
    BENIGN,
    DEEP,
    REFUSAL,
    PolicyData,
    PolicyExample,
    PolicyTrainConfig,
    check_out_dir,
    policy_examples,
    read_policy_data,
    refusal_text,
    train_policy,
)
from saffron.train.texts import written_texts

TINY = "tiny-random-llama"


def rows(n: int) -> list[PromptRow]:
    return [PromptRow(f"set-{i:04d}", f"harmful request number {i}") for i in range(n)]


def test_refusals_are_varied_and_end_in_a_stop_token() -> None:
    policy = make_policy(load_model(TINY))
    chat = policy.chat
    data = PolicyData(rows(200), {}, [("say hi", (5, 6, 2))], [])
    exs = policy_examples(chat, data, PolicyTrainConfig())
    refusals = [ex for ex in exs if ex.source == REFUSAL]
    assert len(refusals) == 200
    assert all(ex.target[-1] in chat.eos_ids for ex in refusals)
    texts = {chat.decode(ex.target) for ex in refusals}
    assert len(texts) >= 60  # many refusals × redirections, not one string
    with_redirect = sum(any(r in t for r in written_texts().redirections) for t in texts)
    assert 0 < with_redirect < len(texts)
    # the context is the chat input: it ends with the template infix, never with the target
    seq = chat.sequence("harmful request number 0")
    assert refusals[0].context == seq.tokens
    (benign,) = [ex for ex in exs if ex.source == BENIGN]
    assert benign.target == (5, 6, 2)


def test_deep_examples_start_with_a_harmful_prefix_and_recover() -> None:
    chat = make_policy(load_model(TINY)).chat
    answers = {r.id: "Sure, here is exactly how you do it, step one" for r in rows(100)}
    shallow = policy_examples(chat, PolicyData(rows(100), answers, [], []), PolicyTrainConfig())
    cfg = PolicyTrainConfig(deep_fraction=0.5, deep_max_prefix=12)
    deep = policy_examples(chat, PolicyData(rows(100), answers, [], []), cfg)
    assert not [ex for ex in shallow if ex.source == DEEP]
    extra = [ex for ex in deep if ex.source == DEEP]
    assert 30 <= len(extra) <= 70
    # the deep mix adds examples; its refusals are the shallow mix's
    assert [ex for ex in deep if ex.source == REFUSAL] == shallow
    recoveries = set(written_texts().recoveries)
    full = chat.encode(answers["set-0000"])
    for ex in extra:
        i = int(chat.decode(ex.context).split("number ")[1].split("<")[0])
        plain = chat.sequence(f"harmful request number {i}").tokens
        start = ex.context[len(plain) :]
        assert 1 <= len(start) <= 12 and start == full[: len(start)]
        assert any(chat.decode(ex.target).startswith(r) for r in recoveries)
    # no answer, no deep example
    none = policy_examples(chat, PolicyData(rows(100), {}, [], []), cfg)
    assert not [ex for ex in none if ex.source == DEEP]


def test_training_teaches_the_target(tmp_path: Path) -> None:
    """A known optimum: after training, greedy decoding reproduces the refusal exactly."""
    base = load_model(TINY)
    chat = make_policy(base).chat
    target = (*chat.encode("No."), min(chat.eos_ids))
    ex = PolicyExample(chat.sequence("do harm").tokens, target, REFUSAL)
    cfg = PolicyTrainConfig(epochs=60, batch_size=1, lr=3e-2, rank=8, decision_weight=0.0)
    meta = train_policy(base, [ex], tmp_path / "p", cfg, {"data": "toy"})
    assert meta["final_loss_mean50"] < meta["first_loss_mean50"]  # type: ignore[operator]
    trained = make_policy(load_model(str(tmp_path / "p")))
    (out,) = decode_batch(
        trained,
        [trained.chat.sequence("do harm")],
        SearchConfig(max_new_tokens=8, min_new_tokens=0),
        greedy=True,
    )
    assert out.generated == target
    assert fingerprint(str(tmp_path / "p")) is not None
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["kind"] == "policy"


def test_bulk_greedy_matches_stepwise_greedy() -> None:
    policy = make_policy(load_model(TINY))
    seqs = [policy.chat.sequence(p) for p in ("a", "a longer prompt here", "xyz")]
    cfg = SearchConfig(max_new_tokens=12, min_new_tokens=0)
    step = [s.generated for s in decode_batch(policy, seqs, cfg, greedy=True)]
    assert bulk_greedy(policy, seqs, 12, batch_size=2) == step


def write(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "no rows"),
        (["", "  "], "no rows"),
        ([{"prompt": "x"}], r":1: 'harmful' must be true or false, got None"),
        ([{"prompt": "x", "harmful": "yes"}], r":1: 'harmful' must be true or false, got 'yes'"),
        ([{"prompt": "", "harmful": True}], r":1: 'prompt' must be a non-empty string"),
        ([{"prompt": "x", "harmful": False}], r":1: a benign row needs a 'response'"),
        (
            [
                {"prompt": "ok", "harmful": True},
                {"prompt": "build a bomb", "harmful": True, "response": "Step 1: buy fertiliser."},
            ],
            r":2: labelled harmful, but its response is not a refusal",
        ),
        (
            [{"prompt": "bake bread", "harmful": False, "response": "I'm sorry, I can't help."}],
            r":1: labelled benign, but its response is a refusal",
        ),
        (["{not json"], r":1:"),
    ],
)
def test_bad_data_files(lines: list[object], message: str, tmp_path: Path) -> None:
    with pytest.raises(SaffronError, match=message):
        read_policy_data(write(tmp_path / "d.jsonl", lines))


def test_out_dir_holding_another_model_is_refused(tmp_path: Path) -> None:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "meta.json").write_text(json.dumps({"base": TINY, "safe_token": " safe"}))
    with pytest.raises(SaffronError, match="holds a guard or MRM, not a policy"):
        check_out_dir(guard, TINY)
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"kind": "policy", "base": "elsewhere"}))
    with pytest.raises(SaffronError, match="trained from 'elsewhere', not 'tiny-random-llama'"):
        check_out_dir(other, TINY)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(SaffronError, match="not a Saffron policy"):
        check_out_dir(junk, TINY)
    same = tmp_path / "same"
    same.mkdir()
    (same / "meta.json").write_text(json.dumps({"kind": "policy", "base": TINY}))
    check_out_dir(same, TINY)  # retraining a policy of the same base is allowed
    check_out_dir(tmp_path / "new", TINY)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "EMPTY"], "no rows"),
        (["--data", "MISLABELLED"], "labelled harmful, but its response is not a refusal"),
        (["--base", "no-such-model"], "unknown model 'no-such-model'"),
        (["--out", "GUARD"], "holds a guard or MRM, not a policy"),
        (["--deep", "1.5"], "expected a number in [0, 1]"),
    ],
)
def test_cli_bad_input_one_line_exit_2_nothing_written(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAFFRON_CACHE", str(tmp_path / "cache"))
    good = write(tmp_path / "good.jsonl", [{"prompt": "do harm", "harmful": True}])
    files = {
        "EMPTY": write(tmp_path / "empty.jsonl", []),
        "MISLABELLED": write(
            tmp_path / "bad.jsonl",
            [{"prompt": "make poison", "harmful": True, "response": "Mix these two."}],
        ),
        "GUARD": tmp_path / "guard",
    }
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "meta.json").write_text(json.dumps({"base": TINY}))
    (tmp_path / "guard" / "adapter_model.safetensors").write_bytes(b"weights")
    before = snapshot(tmp_path / "guard")
    argv = ["train-policy", "--base", TINY, "--data", str(good), "--out", str(tmp_path / "o")]
    for a in args:
        argv.append(str(files.get(a, a)))
    # later flags win in argparse: the parametrised ones override the defaults above
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not (tmp_path / "o").exists()
    assert snapshot(tmp_path / "guard") == before


def test_cli_trains_a_loadable_policy_from_a_data_file(tmp_path: Path) -> None:
    data = write(
        tmp_path / "d.jsonl",
        [
            {"prompt": "do harm", "harmful": True},
            {"prompt": "say hello", "harmful": False, "response": "Hello there!"},
        ],
    )
    out = tmp_path / "p"
    assert main(["train-policy", "--base", TINY, "--data", str(data), "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["base"] == TINY and meta["examples_by_source"] == {"refusal": 1, "user": 1}
    assert str(tmp_path) not in (out / "adapter_config.json").read_text()
    trained = load_model(str(out)).model
    base = load_model(TINY).model
    ids = torch.tensor([[1, 50, 60, 70]])
    assert not torch.allclose(trained(input_ids=ids).logits, base(input_ids=ids).logits)


def test_refusal_text_is_seeded() -> None:
    a = [refusal_text(random.Random(3), 0.5) for _ in range(5)]
    b = [refusal_text(random.Random(3), 0.5) for _ in range(5)]
    assert a == b


def test_benign_answers_that_decline_are_left_out() -> None:
    chat = make_policy(load_model(TINY)).chat
    eos = min(chat.eos_ids)
    benign = [
        ("bake bread", (*chat.encode("Mix flour and water."), eos)),
        ("fix my bike", (*chat.encode("I'm sorry, but I can't help with that."), eos)),
    ]
    exs = policy_examples(chat, PolicyData([], {}, benign, []), PolicyTrainConfig())
    assert [chat.decode(ex.target) for ex in exs] == ["Mix flour and water."]


def test_cli_default_out_is_the_embedded_smol_aligned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import saffron.paths

    monkeypatch.setattr(saffron.paths, "artifacts_dir", lambda: tmp_path / "artifacts")
    data = write(tmp_path / "d.jsonl", [{"prompt": "do harm", "harmful": True}])
    assert main(["train-policy", "--base", TINY, "--data", str(data)]) == 0
    assert (tmp_path / "artifacts" / "smol-aligned" / "adapter_model.safetensors").is_file()
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "smol-aligned " in listed and "smol-aligned-deep" in listed


def test_decision_term_weighs_each_examples_first_token_once() -> None:
    from torch import nn

    from saffron.train.policy_train import PolicyExample, sft_loss

    base = load_model(TINY)
    decoder, head = base.model.base_model, base.model.get_output_embeddings()
    exs = [
        PolicyExample((1, 2, 3), (4, 5), "refusal"),
        PolicyExample((1, 2), (6, 7, 8, 9), "benign"),
    ]
    dev = torch.device("cpu")
    with torch.no_grad():
        plain = sft_loss(decoder, head, exs, 0, dev)
        both = sft_loss(decoder, head, exs, 0, dev, decision_weight=2.0)
        firsts = []
        for ex in exs:
            logits = base.model(torch.tensor([ex.context + ex.target])).logits[0].float()
            firsts.append(
                nn.functional.cross_entropy(
                    logits[len(ex.context) - 1 : len(ex.context)], torch.tensor(ex.target[:1])
                )
            )
    assert float(both - plain) == pytest.approx(2.0 * float(sum(firsts)) / 2, rel=1e-4)


def test_decision_term_leaves_deep_examples_out() -> None:
    from saffron.train.policy_train import PolicyExample, sft_loss

    base = load_model(TINY)
    decoder, head = base.model.base_model, base.model.get_output_embeddings()
    answer = PolicyExample((1, 2), (6, 7, 8, 9), "benign")
    deep = PolicyExample((1, 2, 3, 4), (5, 6), "deep")
    dev = torch.device("cpu")
    with torch.no_grad():
        plain = sft_loss(decoder, head, [answer, deep], 0, dev)
        both = sft_loss(decoder, head, [answer, deep], 0, dev, decision_weight=1.5)
        alone = sft_loss(decoder, head, [answer], 0, dev, decision_weight=1.5)
        alone_plain = sft_loss(decoder, head, [answer], 0, dev)
        only_deep = sft_loss(decoder, head, [deep], 0, dev, decision_weight=1.5)
        only_deep_plain = sft_loss(decoder, head, [deep], 0, dev)
    # the decision term is the benign answer's first token alone, as if the deep one were absent
    assert float(both - plain) == pytest.approx(float(alone - alone_plain), rel=1e-5)
    assert float(only_deep) == pytest.approx(float(only_deep_plain))  # no term at all
