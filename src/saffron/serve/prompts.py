"""Turning an API request's messages (or raw prompt) into the policy's :class:`TokenSequence`.

Chat requests:

* an optional leading ``system`` (or ``developer``) message, then ``user`` and ``assistant``
  turns; the conversation up to the last ``user`` message is rendered with the tokenizer's
  chat template (multi-turn as the template renders it);
* a final ``assistant`` message is a *prefill*: the answer starts with it, the policy continues
  it, and the response holds only the continuation (reward models never see the prefill);
* the ``prompt`` segment — what the guard and the MRM judge — is the last user message;
  earlier turns are context for the policy only. A single user message gives exactly the
  sequence ``saffron generate --prompt`` builds.

Completion requests: the prompt is raw text the policy continues (no chat template, as in
OpenAI's legacy completions), and it is also what the reward models judge as the request.
"""

from __future__ import annotations

from saffron.errors import SaffronError
from saffron.lm.chat import SENTINEL, ChatFormat, split_template
from saffron.serve.errors import bad_request
from saffron.serve.schemas import ChatMessage
from saffron.types import TokenSequence


def chat_sequence(chat: ChatFormat, messages: list[ChatMessage], reserve: int) -> TokenSequence:
    """The policy's input for ``messages``; ApiError 400 for a malformed conversation or one
    that does not fit the context with ``reserve`` new tokens."""
    turns = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in messages
    ]
    prefill = turns.pop()["content"] if turns[-1]["role"] == "assistant" else ""
    _check_turns(turns)
    last = turns[-1]["content"]
    if not last.strip():
        raise bad_request("the last user message is empty", param="messages")
    if len(turns) == 1:
        before, after = chat.prefix_text, chat.infix_text
    else:
        turns[-1] = {"role": "user", "content": SENTINEL}
        try:
            before, after = split_template(chat.tokenizer, turns, add_generation_prompt=True)
        except SaffronError as err:
            raise bad_request(str(err), param="messages") from err
    seq = TokenSequence(
        chat.encode(before), chat.encode(last), chat.encode(after), prefill=chat.encode(prefill)
    )
    check_context(chat, seq, reserve)
    return seq


def _check_turns(turns: list[dict[str, str]]) -> None:
    """System messages only first; then user/assistant alternating, ending with a user turn."""
    body = turns[1:] if turns and turns[0]["role"] == "system" else turns
    if not body or body[-1]["role"] != "user":
        raise bad_request(
            "the conversation must end with a user message (optionally followed by one "
            "assistant message, used as the start of the answer)",
            param="messages",
        )
    for i, turn in enumerate(body):
        # counted back from the final user turn: user, assistant, user, …
        expected = "user" if (len(body) - 1 - i) % 2 == 0 else "assistant"
        if turn["role"] != expected:
            raise bad_request(
                "messages must be: an optional system message, then user and assistant "
                "turns alternating",
                param="messages",
            )


def completion_sequence(chat: ChatFormat, prompt: str, reserve: int) -> TokenSequence:
    """Raw-text prompt: no template, the whole text is the judged request."""
    if not prompt.strip():
        raise bad_request("the prompt is empty", param="prompt")
    seq = TokenSequence((), chat.encode(prompt), ())
    check_context(chat, seq, reserve)
    return seq


def check_context(chat: ChatFormat, seq: TokenSequence, reserve: int) -> None:
    """ApiError 400 ``context_length_exceeded`` when ``seq`` + ``reserve`` tokens overflow."""
    if len(seq) + reserve > chat.max_context:
        raise bad_request(
            f"the input is {len(seq)} tokens; with max_tokens {reserve} it exceeds the "
            f"model's context of {chat.max_context} tokens",
            code="context_length_exceeded",
            param="messages",
        )
