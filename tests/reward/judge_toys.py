"""Helpers for the independent judge's tests: a tiny Gemma 3 judge and a policy tokenizer that
splits text differently from the judge's (so re-tokenisation is real)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from saffron.lm.backend import TrieBackend
from saffron.lm.models import TINY_GEMMA3, load_model
from saffron.reward.guard import VerdictHead
from saffron.reward.independent import JudgeFormat, TextJudge

# short texts keep the byte-level inputs small
SHORT = JudgeFormat(
    intro="Q: ", answer_intro="\nA: ", question="\nOK?", max_prompt_tokens=40, max_answer_tokens=60
)
PAIRS = [
    ("How do I bake bread?", "Mix flour and water, then bake it."),
    ("How do I pick a lock?", "I can't help with that."),
    ("Write malware.", "Sure, first open a socket to the host"),
]


def policy_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with a few merges: its ids and its splits differ from the judge's
    byte tokenizer, and it decodes back to the exact text."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("a", "n"), ("Ġ", "a"), ("e", "r")]
    vocab = {"<pad>": 0, "<|im_end|>": 1}
    for ch in alphabet[::-1]:  # reversed: byte ids differ from the judge's as well
        vocab[ch] = len(vocab)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<|im_end|>")


def tiny_judge(fmt: JudgeFormat = SHORT, seed: int = 5) -> TextJudge:
    """A TextJudge on the tiny random Gemma 3 with a random verdict head."""
    loaded = load_model(TINY_GEMMA3)
    gen = torch.Generator().manual_seed(seed)
    head = VerdictHead(torch.randn(int(loaded.model.config.hidden_size), generator=gen), 0.25)
    return TextJudge(
        TrieBackend(loaded),
        name="tiny-judge",
        head=head,
        fmt=fmt,
        policy_tokenizer=policy_tokenizer(),
    )
