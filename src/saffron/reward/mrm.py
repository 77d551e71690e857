"""The multifurcation reward model (MRM; paper Eq. 3, 5, 7).

One forward pass over a sequence s returns, for EVERY possible next token a, an estimate of the
guard's reward R(s·a). The model is the guard's own network with

* LoRA adapters (merged into the weights for inference: no extra latency), and
* its LM head reused as a vocabulary-sized reward head: frozen weight W (V, d), a trainable bias
  b (V,), so ``M(s) = W h_last(s) + b`` — entry a is the estimate of R(s·a).

Input layout (:class:`Layout`): ``prefix | prompt | infix | generated`` — for an MRM trained
from a readout guard the guard's own judge template, for the released Saffron-1 model
``"<bos>\\n\\nUser:" | prompt | "\\n\\nAgent:" | generated``. The attacker's prefill is never
part of it. The reward vector is read at the last position.

Conservative exploration (Eq. 7): tokens never supervised as a next token in training
("unseen") score −∞ (``float('-inf')``, not a large finite negative), so a search never picks
them. Their bias entries are untrained (Proposition 1) and would be noise.

The MRM's output is indexed by the POLICY's token ids, so an MRM only works with the policy
whose tokenizer it was trained for; :meth:`MRM.check_policy` refuses any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from saffron.errors import SaffronError
from saffron.lm.adapters import merge_lora
from saffron.lm.backend import Backend, TrieBackend
from saffron.lm.ledger import Ledger
from saffron.lm.models import LoadedModel
from saffron.lm.vocab import check_policy_vocabulary
from saffron.reward.base import MultifurcationRM, RewardRows
from saffron.types import Tokens, TokenSequence

# Files of an MRM folder written by `saffron train-mrm` (see saffron.reward.mrm_load).
MRM_FORMAT = "saffron-mrm/1"
META_FILE = "meta.json"
BIAS_FILE = "head_bias.safetensors"
UNSEEN_FILE = "unseen_mask.safetensors"


@dataclass(frozen=True)
class Layout:
    """Where the prompt and the generated tokens sit in the MRM's input."""

    prefix: Tokens
    infix: Tokens

    def tokens(self, seq: TokenSequence) -> Tokens:
        """The MRM's input for ``seq``: ``prefix | prompt | infix | generated`` (no prefill)."""
        return self.prefix + seq.prompt + self.infix + seq.generated

    def response_start(self, seq: TokenSequence) -> int:
        """Index of the first generated token in :meth:`tokens` (= len of the context)."""
        return len(self.prefix) + len(seq.prompt) + len(self.infix)

    def to_dict(self) -> dict[str, list[int]]:
        return {"prefix": list(self.prefix), "infix": list(self.infix)}


class RewardHead(nn.Module):
    """The LM head reused as a reward head: (…, d) → (…, V) = h Wᵀ + b.

    ``weight`` is the LM head's weight, held by reference and never trained (a plain tensor,
    not a parameter); ``bias`` (V,) float32 is the only parameter. :meth:`gather` gives single
    entries — ``(W h + b)[a] = W[a]·h + b[a]`` — without computing the whole vocabulary, which
    is how training reads the entry of the observed next token.
    """

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        if bias.shape != (weight.shape[0],):
            raise SaffronError(
                f"reward head bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)"
            )
        self.weight = weight.detach()
        self.bias = nn.Parameter(bias.detach().float().clone())
        self.out_features = int(weight.shape[0])

    def forward(self, hidden: Tensor) -> Tensor:
        """(…, d) → (…, V) float32.

        The matmul runs in the weight's own dtype (float32 accumulation, as the LM head it
        is): casting the V×d weight to float32 on every call would copy it each time (for
        Llama Guard 3 1B, 128256 × 2048 values per call) to gain nothing but the rounding of
        the inputs. Only the (…, V) output is cast.
        """
        w = self.weight
        return (hidden.to(w.dtype) @ w.T).float() + self.bias

    def gather(self, hidden: Tensor, tokens: Tensor) -> Tensor:
        """Entry ``tokens[i]`` of the reward vector of ``hidden[i]``: (N, d), (N,) → (N,)."""
        rows = self.weight.index_select(0, tokens).float()  # (N, d)
        return (hidden.float() * rows).sum(-1) + self.bias.index_select(0, tokens)


@dataclass(frozen=True)
class MRMParts:
    """What an MRM adds to its network: name, input layout, head bias (V,) float32, unseen
    mask (V,) bool and the metadata its folder recorded."""

    name: str
    layout: Layout
    bias: Tensor
    unseen: Tensor
    meta: dict[str, object]


class MRM(MultifurcationRM):
    """A multifurcation reward model on a backend (LoRA already merged into its weights).

    ``unseen`` (V,) bool marks tokens never supervised as a next token in training; they score
    −∞ when ``conservative``. ``meta`` is what the artifact folder recorded (may be empty).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        name: str,
        layout: Layout,
        bias: Tensor,
        unseen: Tensor,
        meta: dict[str, object] | None = None,
    ) -> None:
        vocab = backend.vocab_size
        if unseen.shape != (vocab,) or unseen.dtype != torch.bool:
            raise SaffronError(
                f"MRM {name!r}: unseen mask must be bool of shape ({vocab},), got "
                f"{unseen.dtype} {tuple(unseen.shape)}"
            )
        self.backend, self.name, self.calls = backend, name, 0
        self.vocab_size = vocab
        self.layout = layout
        self.head = RewardHead(backend.lm_head.weight, bias.to(backend.device))
        self.head.requires_grad_(False)
        self.unseen = unseen.to(backend.device)
        self.meta = dict(meta or {})

    def check_policy(self, vocab_size: int, tokenizer_hash: str | None = None) -> None:
        """Refuse a policy whose vocabulary differs from the one this MRM scores
        (:func:`saffron.lm.vocab.check_policy_vocabulary`; the hash when the folder recorded
        one)."""
        ours = self.meta.get("policy_vocab_hash")
        check_policy_vocabulary(
            self.name,
            self.vocab_size,
            vocab_size,
            mrm_hash=None if ours is None else str(ours),
            policy_hash=tokenizer_hash,
        )

    def tokens(self, seq: TokenSequence) -> Tokens:
        return self.layout.tokens(seq)

    def rewards(self, seqs: Sequence[TokenSequence], *, conservative: bool = True) -> Tensor:
        """(B, V) float32: entry a of row i estimates R(seqs[i]·a) (Eq. 3); unseen → −∞ (Eq. 7).

        One backend call for all sequences; the head's FLOPs are counted by the backend.
        """
        self.calls += len(seqs)
        hidden = self.backend.last_hidden([self.tokens(s) for s in seqs])  # (B, d)
        out = self.backend.apply_head(hidden, self.head).float()  # (B, V)
        if conservative:
            out = out.masked_fill(self.unseen, float("-inf"))
        return out

    def reward_rows(
        self, seqs: Sequence[TokenSequence], *, conservative: bool = True
    ) -> RewardRows:
        """The vectors of :meth:`rewards` as the hidden states of one backend call, each entry
        computed when read (:class:`HeadRewards`): a search reads a few children per row, and
        the whole head costs 2·d·V FLOPs per row, about a fifth of SmolLM2-135M's forward."""
        self.calls += len(seqs)
        hidden = self.backend.last_hidden([self.tokens(s) for s in seqs])  # (B, d)
        return HeadRewards(self, hidden, conservative)

    def next_token_rewards(self, seqs: Sequence[TokenSequence]) -> list[Tensor]:
        """For each sequence, the MRM's reward of each observed generated token: entry j is
        ``M(s[0:j])[s_j]``, the estimate of R(generated[: j + 1]) made BEFORE seeing token j
        (the quantity that partial supervision trains, Eq. 5). Shape (len(generated),), raw
        (no unseen mask). Sequences with nothing generated give an empty tensor.

        One backend call over all sequences (each prefix's hidden state computed once).
        """
        live = [s for s in seqs if s.generated]
        self.calls += sum(len(s.generated) for s in live)
        starts = [self.layout.response_start(s) - 1 for s in live]
        hidden = self.backend.hidden_from([self.tokens(s) for s in live], starts) if live else []
        out: list[Tensor] = []
        it = iter(hidden)
        for s in seqs:
            if not s.generated:
                out.append(torch.zeros(0))
                continue
            h = next(it)[:-1]  # (L, d): position before each generated token
            tok = torch.tensor(s.generated, device=h.device)
            full = self.backend.apply_head(h, self.head)  # (L, V), FLOPs counted
            out.append(full.float().gather(1, tok[:, None]).squeeze(1).cpu())
        return out


class HeadRewards(RewardRows):
    """An MRM's reward vectors held as its hidden states (B, d): entry a of row i is
    ``W[a]·h_i + b[a]`` (:meth:`RewardHead.gather`), −∞ for unseen tokens when
    ``conservative`` (Eq. 7), computed only when read. Each entry read is counted as a head
    of one output (2·d FLOPs) in the backend's compute and charged to ``payer`` when set.

    The entries equal those of :meth:`MRM.rewards` up to float32 rounding (a dot product
    instead of a matrix product): every search reads them this way, alone or batched.
    """

    def __init__(
        self, mrm: MRM, hidden: Tensor, conservative: bool, payer: Ledger | None = None
    ) -> None:
        self.mrm, self.hidden, self.conservative, self.payer = mrm, hidden, conservative, payer

    def __len__(self) -> int:
        return int(self.hidden.shape[0])

    def at(self, rows: Tensor, tokens: Tensor) -> Tensor:
        dev = self.hidden.device
        rows, tokens = rows.to(dev), tokens.to(dev)
        with torch.inference_mode():
            out = self.mrm.head.gather(self.hidden.index_select(0, rows), tokens)  # (M,)
            if self.conservative:
                out = out.masked_fill(self.mrm.unseen.index_select(0, tokens), float("-inf"))
        self.mrm.backend.count_head(int(tokens.numel()), 1, self.payer)
        return out.float().cpu()

    def split(self, sizes: Sequence[int], payers: Sequence[Ledger | None]) -> list[RewardRows]:
        parts = torch.split(self.hidden, list(sizes))
        return [
            HeadRewards(self.mrm, h, self.conservative, p)
            for h, p in zip(parts, payers, strict=True)
        ]


def merged_mrm(
    backbone: LoadedModel,
    folder: Path,
    parts: MRMParts,
    *,
    kv_budget: int | None = None,
    error: str,
) -> MRM:
    """An MRM on a trie backend: ``backbone`` with the LoRA adapter in ``folder`` merged in
    (``backbone.model`` is mutated), plus ``parts``. ``kv_budget``: the trie's byte budget
    (None: the default). A bad adapter raises SaffronError ``"<error>: <reason>"``."""
    loaded = merge_lora(backbone, folder, parts.name, error=error)
    return MRM(
        TrieBackend(loaded, max_bytes=kv_budget),
        name=parts.name,
        layout=parts.layout,
        bias=parts.bias,
        unseen=parts.unseen,
        meta=parts.meta,
    )
