"""The prompts `wattlm load` sends: drawn from a text (the bundled plays by default), or read from a
JSONL file of OpenAI chat messages or ShareGPT conversations.

Input lengths drawn from a text are approximate: wattlm does not know the server's tokenizer, so a
prompt of N tokens is cut as 0.75·N words (English prose runs about 0.75 words per token). The
server's own `usage` reports the real prompt length of every request, and that is what is recorded.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import Lengths

WORDS_PER_TOKEN = 0.75
POOL = 1024  # prompts prepared per run; requests cycle through them


@dataclass(frozen=True)
class Prompt:
    messages: tuple[dict[str, str], ...]  # OpenAI chat messages
    max_tokens: int

    def text(self) -> str:
        """The prompt for the completions API: the messages' contents, one per paragraph."""
        return "\n\n".join(m["content"] for m in self.messages)


def _draw(rng: random.Random, lengths: Lengths) -> int:
    return rng.randint(lengths.low, lengths.high)


def from_text(text: str, input_len: Lengths, output_len: Lengths, seed: int, count: int = POOL) -> list[Prompt]:
    words = text.split()
    if not words:
        raise ConfigError("the text to draw prompts from is empty: give a {text} file with prose in it", field="text")
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        n = max(1, round(_draw(rng, input_len) * WORDS_PER_TOKEN))
        start = rng.randrange(max(1, len(words) - n))
        passage = " ".join(words[start : start + n])
        content = f"Continue this text:\n\n{passage}"
        prompts.append(Prompt(({"role": "user", "content": content},), _draw(rng, output_len)))
    return prompts


def _messages(record: Any, where: str) -> tuple[dict[str, str], ...]:
    """OpenAI {"messages": [...]}, ShareGPT {"conversations": [{"from", "value"}...]} (turns up to the
    first human one, which is what a user sends), or {"prompt": "..."}."""
    if isinstance(record, dict) and isinstance(record.get("messages"), list):
        msgs = record["messages"]
        if msgs and all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in msgs):
            return tuple({"role": str(m["role"]), "content": m["content"]} for m in msgs)
    if isinstance(record, dict) and isinstance(record.get("conversations"), list):
        roles = {"human": "user", "user": "user", "system": "system"}
        out = []
        for turn in record["conversations"]:
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                break
            role = roles.get(str(turn.get("from")))
            if role is None:
                break
            out.append({"role": role, "content": turn["value"]})
            if role == "user":
                return tuple(out)
    if isinstance(record, dict) and isinstance(record.get("prompt"), str) and record["prompt"].strip():
        return ({"role": "user", "content": record["prompt"]},)
    raise ConfigError(
        f'{where}: not an OpenAI messages record ({{"messages": [{{"role", "content"}}]}}), a ShareGPT '
        'conversation ({"conversations": [{"from": "human", "value"}]}) or {"prompt": TEXT}; fix {prompts}',
        field="prompts",
    )


def from_file(path: Path, output_len: Lengths, seed: int) -> list[Prompt]:
    rng = random.Random(seed)
    prompts = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{{prompts}} {path} cannot be read as UTF-8 text ({e})", field="prompts") from e
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{{prompts}} {path} line {number} is not JSON ({e.msg})", field="prompts") from e
        prompts.append(Prompt(_messages(record, f"{path} line {number}"), _draw(rng, output_len)))
    if not prompts:
        raise ConfigError(f"{{prompts}} {path} holds no prompt: give one JSON record per line", field="prompts")
    return prompts


def sha256(prompts: list[Prompt]) -> str:
    """Of the prompts and their output lengths, in order: what exactly was sent."""
    data = json.dumps([[list(p.messages), p.max_tokens] for p in prompts], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()
