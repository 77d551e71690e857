"""Request bodies of the OpenAI endpoints Saffron serves, as pydantic models.

Fields OpenAI defines but Saffron cannot honour (tools, logprobs, stop sequences, …) are refused
with a 400 when they are set, never silently dropped; unknown fields are ignored, as OpenAI's
own server does for fields newer than it. The ``saffron`` object is Saffron's extension
(the ``openai`` client sends it with ``extra_body={"saffron": {...}}``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

# Fields whose non-empty value would change the answer in a way Saffron does not implement.
UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
    "stop",
    "response_format",
    "logit_bias",
    "suffix",
    "echo",
    "best_of",
    "audio",
    "modalities",
)

Option = StrictBool | StrictInt | StrictFloat | StrictStr


class SaffronOptions(BaseModel):
    """The ``saffron`` extension: the search budget, the method's own options, and the number
    of tokens before which stop tokens are forbidden. Unset fields take the server's defaults."""

    model_config = ConfigDict(extra="forbid")

    budget: Annotated[int, Field(ge=1)] | None = None
    options: dict[str, Option] = Field(default_factory=dict)
    min_tokens: Annotated[int, Field(ge=0)] | None = None


class TextPart(BaseModel):
    """One part of a message's content list; only text parts are accepted."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """A chat message. ``developer`` is OpenAI's newer name for ``system``."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class _Sampling(BaseModel):
    """Fields shared by both endpoints."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    n: int | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    saffron: SaffronOptions = Field(default_factory=SaffronOptions)

    def unsupported(self) -> str | None:
        """The first set field Saffron does not implement, or None."""
        extra = self.model_extra or {}
        for name in UNSUPPORTED:
            if extra.get(name) not in (None, False, [], {}, ""):
                return name
        return None

    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk (``stream_options.include_usage``)."""
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: one prompt (a string or a list of exactly one string)."""

    prompt: str | list[str]

    def token_limit(self) -> int | None:
        return self.max_tokens

    def text(self) -> str | None:
        """The prompt, or None when it is a list of more or fewer than one string."""
        if isinstance(self.prompt, str):
            return self.prompt
        return self.prompt[0] if len(self.prompt) == 1 else None
