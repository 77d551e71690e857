"""Tokenizer identity: which token ids mean the same strings in two models.

A readout guard reads the policy's token ids directly, an MRM's reward vector is indexed by
them, and a token-level reward dataset stores them; each is only valid for a policy whose
tokenizer maps every token string to the same id. This module is the one place that decides
that: :func:`same_vocabulary` for two tokenizers at hand, :func:`vocab_hash` for one recorded
in an artifact, and :func:`check_policy_vocabulary` for a model scored over the policy's ids.
"""

from __future__ import annotations

import json

from transformers import PreTrainedTokenizerBase

from saffron.errors import SaffronError
from saffron.files import sha256_bytes


def vocab_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    """Identity of a tokenizer's vocabulary: sha256 of its sorted (token, id) pairs.

    Two tokenizers with the same hash map every token string to the same id, which is what
    an MRM (indexed by token id) and a token-level reward dataset depend on.
    """
    pairs = sorted((str(k), int(v)) for k, v in tokenizer.get_vocab().items())
    return sha256_bytes(json.dumps(pairs, ensure_ascii=False).encode())


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True when both tokenizers map every token string to the same id."""
    return a is b or a.get_vocab() == b.get_vocab()


def check_policy_vocabulary(
    mrm: str,
    mrm_vocab: int,
    policy_vocab: int,
    *,
    policy: str | None = None,
    mrm_hash: str | None = None,
    policy_hash: str | None = None,
) -> None:
    """Refuse an MRM (output indexed by the policy's token ids) for a policy it does not fit.

    Sizes must be equal; hashes (:func:`vocab_hash`) are compared when both are known.
    ``policy`` names the policy in the message when given. Raises SaffronError, one line.
    """
    if mrm_vocab != policy_vocab:
        theirs = f", policy {policy!r} has" if policy else " but the policy has"
        raise SaffronError(
            f"MRM {mrm!r} scores a vocabulary of {mrm_vocab} tokens{theirs} {policy_vocab}; "
            "an MRM only works with its own policy's tokenizer"
        )
    if mrm_hash is not None and policy_hash is not None and mrm_hash != policy_hash:
        raise SaffronError(
            f"MRM {mrm!r} was trained for another tokenizer (vocabulary hash "
            f"{mrm_hash[:12]}…, the policy's is {policy_hash[:12]}…)"
        )
