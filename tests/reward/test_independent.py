"""The independent judge reads text: policy tokens are decoded and re-tokenised, the prefill is
never read, prefixes are judged as text, and a bad artifact stops with one readable line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from judge_toys import PAIRS, SHORT, policy_tokenizer, tiny_judge

from saffron.errors import SaffronError
from saffron.reward.independent import (
    HEAD_FILE,
    JUDGE_KIND,
    JudgeFormat,
    is_judge_folder,
    load_judge,
    longest_input,
)
from saffron.reward.loading import load_guard
from saffron.types import TokenSequence


def _seq(prompt: str, answer: str, prefill: str = "") -> TokenSequence:
    tok = policy_tokenizer()

    def enc(t: str) -> tuple[int, ...]:
        return tuple(tok.encode(t, add_special_tokens=False))

    return TokenSequence((1, 1), enc(prompt), (1,), enc(prefill), (*enc(answer), 1))


def test_score_of_policy_tokens_equals_score_of_their_text() -> None:
    judge = tiny_judge()
    seqs = [_seq(p, a) for p, a in PAIRS]
    # the policy's ids are not the judge's: the judge must decode and re-encode
    answer = PAIRS[0][1]
    assert policy_tokenizer().encode(answer) != judge.tok.encode(answer, add_special_tokens=False)
    by_tokens = judge.score(seqs)
    by_text = judge.score_texts([p for p, _ in PAIRS], [a for _, a in PAIRS])
    assert by_tokens.shape == (3,) and by_tokens.dtype == torch.float32
    assert torch.allclose(by_tokens, by_text, atol=1e-6)
    assert judge.calls == 6


def test_the_prefill_is_never_read() -> None:
    judge = tiny_judge()
    plain = judge.score([_seq(*PAIRS[2])])
    forced = judge.score([_seq(*PAIRS[2], prefill="Sure, here is how")])
    assert torch.equal(plain, forced)


def test_each_prefix_is_judged_as_its_text() -> None:
    judge = tiny_judge()
    tok = policy_tokenizer()
    seq = _seq(*PAIRS[2])
    (prefixes,) = judge.score_prefixes([seq])
    assert prefixes.shape == (len(seq.generated),)
    texts = [tok.decode(list(seq.generated[: j + 1]), skip_special_tokens=True) for j in range(5)]
    want = judge.score_texts([PAIRS[2][0]] * 5, texts)
    assert torch.allclose(prefixes[:5], want, atol=1e-5)
    assert torch.allclose(prefixes[-1], judge.score([seq])[0], atol=1e-5)
    assert judge.score_prefixes([seq.with_generated(())])[0].numel() == 0


def test_long_texts_are_cut_to_the_format() -> None:
    judge = tiny_judge()
    long_answer = "word " * 200
    ids = judge.tokens("x" * 500, long_answer)
    assert len(ids) == longest_input(judge.tok, SHORT)
    # what lies past the cut does not change the verdict
    a, b = judge.score_texts(["q", "q"], [long_answer, long_answer + "and more"]).tolist()
    assert a == pytest.approx(b, abs=1e-6)


def test_bad_inputs() -> None:
    judge = tiny_judge()
    with pytest.raises(SaffronError, match="2 requests but 1 answers"):
        judge.score_texts(["a", "b"], ["c"])
    assert judge.score_texts([], []).shape == (0,)
    with pytest.raises(SaffronError, match="token limits must be positive"):
        JudgeFormat(max_answer_tokens=0)
    with pytest.raises(SaffronError, match="exceed the 1024 positions"):
        tiny_judge(JudgeFormat(max_answer_tokens=2000))


def test_missing_or_corrupt_artifacts_stop_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(SaffronError, match="run `saffron train-judge`") as err:
        load_judge(str(tmp_path / "nothing"))
    assert "\n" not in str(err.value)
    folder = tmp_path / "judge"
    folder.mkdir()
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(SaffronError, match=r"meta\.json is corrupt"):
        load_judge(str(folder))
    (folder / "meta.json").write_text(json.dumps({"kind": "guard", "base": "tiny"}))
    assert not is_judge_folder(str(folder))
    with pytest.raises(SaffronError, match="does not describe a judge"):
        load_judge(str(folder))
    meta = {"kind": JUDGE_KIND, "base": "tiny-random-gemma3", "format": SHORT.to_dict()}
    (folder / "meta.json").write_text(json.dumps(meta))
    assert is_judge_folder(str(folder))
    with pytest.raises(SaffronError, match=r"verdict head in .* is missing or corrupt"):
        load_guard(str(folder))
    (folder / HEAD_FILE).write_bytes(b"garbage")
    with pytest.raises(SaffronError, match="verdict head"):
        load_judge(str(folder))
    meta["format"] = {"intro": "x", "colour": "red"}
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SaffronError, match=r"format in its meta\.json is corrupt"):
        load_judge(str(folder))
