"""Chat messages → one prompt, through the model's own chat template (the Jinja template stored in
the GGUF as `tokenizer.chat_template`, as Hugging Face tokenizers apply it). The template comes from
a model file, so it runs in Jinja's sandbox: it can format text, not reach Python."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(source)
        except TemplateError as e:
            raise InvalidInputError(
                f"the model's chat template does not parse ({e}); serve /v1/completions only"
            ) from e
        self._tokens = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text for `messages`, ending where the assistant's answer begins."""
        from jinja2 import TemplateError

        try:
            return str(self._template.render(messages=messages, add_generation_prompt=True, **self._tokens))
        except TemplateError as e:
            raise ValueError(f"the model's chat template refused these messages: {e}") from e


def _raise(message: str) -> None:
    from jinja2 import TemplateError

    raise TemplateError(message)
