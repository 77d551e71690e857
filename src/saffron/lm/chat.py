"""Turning a prompt (and an attacker's prefill) into a segmented :class:`TokenSequence`.

The chat template comes from the tokenizer. It is rendered once with a sentinel user message;
the text before the sentinel is the template prefix, the text after it (with the generation
prompt) the template infix. Each segment is tokenised on its own, so segment boundaries are
exact token boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from saffron.errors import SaffronError
from saffron.types import TokenSequence

SENTINEL = "\x00SAFFRON-SLOT\x00"


def split_template(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, str]],
    *,
    add_generation_prompt: bool,
) -> tuple[str, str]:
    """Render ``messages`` with the tokenizer's chat template and split it around the one
    message whose content is :data:`SENTINEL`: (text before it, text after it)."""
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert isinstance(rendered, str)
    if rendered.count(SENTINEL) != 1:
        raise SaffronError("the chat template does not place the message exactly once")
    before, after = rendered.split(SENTINEL)
    return before, after


@dataclass(frozen=True)
class ChatFormat:
    """Segments a prompt with a tokenizer's chat template; knows the stop tokens."""

    tokenizer: PreTrainedTokenizerBase
    prefix_text: str
    infix_text: str
    eos_ids: frozenset[int]
    max_context: int

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_context: int,
        extra_eos: tuple[int, ...] = (),
    ) -> ChatFormat:
        if not getattr(tokenizer, "chat_template", None):
            raise SaffronError("the tokenizer has no chat template; pass a chat model")
        prefix, infix = split_template(
            tokenizer, [{"role": "user", "content": SENTINEL}], add_generation_prompt=True
        )
        eos = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
        eos.update(extra_eos)
        return cls(tokenizer, prefix, infix, frozenset(eos), max_context)

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def sequence(
        self,
        prompt: str,
        prefill: str = "",
        *,
        prefill_tokens: tuple[int, ...] | None = None,
        reserve: int = 0,
    ) -> TokenSequence:
        """The policy's input for ``prompt`` with an optional prefill (text or token ids).

        Raises SaffronError for an empty prompt, or when the input plus ``reserve`` new tokens
        would not fit in the model's context.
        """
        if not prompt.strip():
            raise SaffronError("the prompt is empty")
        seq = TokenSequence(
            template_prefix=self.encode(self.prefix_text),
            prompt=self.encode(prompt),
            template_infix=self.encode(self.infix_text),
            prefill=prefill_tokens if prefill_tokens is not None else self.encode(prefill),
        )
        if len(seq) + reserve > self.max_context:
            raise SaffronError(
                f"the prompt is {len(seq)} tokens; with {reserve} new tokens it exceeds the "
                f"model's context of {self.max_context} tokens"
            )
        return seq

    def decode(self, tokens: tuple[int, ...]) -> str:
        """Text of ``tokens`` without a trailing stop token."""
        if tokens and tokens[-1] in self.eos_ids:
            tokens = tokens[:-1]
        return str(self.tokenizer.decode(list(tokens), skip_special_tokens=False))
