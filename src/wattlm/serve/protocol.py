"""The OpenAI API as wattlm serves it: request types (pydantic, strict about the fields they know,
silent about the ones they do not, as OpenAI's own server is) and the error body.

Parameters wattlm does not implement (n > 1, logprobs, penalties) are refused with a 400 that says
so rather than silently ignored: a load test that asks for them would measure something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

Number = StrictFloat | StrictInt


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number = Field(default=1.0, ge=0, le=2)
    top_p: Number = Field(default=1.0, gt=0, le=1)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    ignore_eos: StrictBool = False  # vLLM's extension: generate max_tokens whatever the model says
    min_tokens: StrictInt = Field(default=0, ge=0)  # vLLM's extension: no end-of-text before this many
    n: StrictInt = Field(default=1, ge=1, le=1)
    logprobs: StrictBool | StrictInt | None = None
    presence_penalty: Number = Field(default=0.0, ge=0, le=0)
    frequency_penalty: Number = Field(default=0.0, ge=0, le=0)
    user: StrictStr | None = None


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictInt]
    max_tokens: StrictInt | None = Field(default=16, ge=1)  # OpenAI's default for completions
    echo: StrictBool = Field(default=False)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class Params:
    """What the scheduler needs to know about a request, whichever endpoint it came from."""

    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    ignore_eos: bool
    min_tokens: int


class BadRequest(Exception):
    """A request the server refuses: `status` and an OpenAI error body."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.message, self.status, self.param = message, status, param
        self.kind = kind or _KINDS.get(status, "invalid_request_error")


_KINDS = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error", 503: "service_unavailable"}


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def parse(model: type[_Sampling], data: Any) -> Any:
    """Validate `data` as `model`, or raise BadRequest naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        request = model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"{where}: {first['msg']}", param=where) from None
    if request.logprobs not in (None, False, 0):
        raise BadRequest("logprobs are not supported by wattlm serve; leave the field out", param="logprobs")
    if isinstance(request, CompletionRequest) and request.echo:
        raise BadRequest("echo is not supported by wattlm serve; leave the field out", param="echo")
    return request


def params(request: _Sampling, *, max_new_tokens: int) -> Params:
    """The sampling parameters of `request`, checked against the server's limits."""
    asked = request.max_completion_tokens if isinstance(request, ChatRequest) else None
    max_tokens = asked or request.max_tokens or max_new_tokens
    if max_tokens > max_new_tokens:
        field = "max_completion_tokens" if asked else "max_tokens"
        raise BadRequest(
            f"{field} {max_tokens} is over this server's limit of {max_new_tokens}; ask for fewer", param=field
        )
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    if len(stop) > 4 or any(not s for s in stop):
        raise BadRequest("stop takes up to 4 non-empty strings", param="stop")
    if request.min_tokens > max_tokens:
        raise BadRequest(f"min_tokens {request.min_tokens} is over max_tokens {max_tokens}", param="min_tokens")
    return Params(
        max_tokens=max_tokens,
        temperature=float(request.temperature),
        top_p=float(request.top_p),
        seed=request.seed,
        stop=stop,
        ignore_eos=request.ignore_eos,
        min_tokens=request.min_tokens,
    )
