"""The prompts `wattlm load` sends: drawn from a text (the bundled plays by default), or read from a
JSONL file of OpenAI chat messages or ShareGPT conversations.

A prompt may be the first turn of a conversation: its `followups` are the user's later turns, sent
one after another, each with the whole history so far — the earlier turns and the model's own
answers to them (never the answers a file recorded), as a chat client resends it. That is the shape
a prefix cache is for: turn k's prompt begins with turn k−1's.

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
    followups: tuple[tuple[str, int], ...] = ()  # later user turns: (content, max_tokens)

    def text(self) -> str:
        """The prompt for the completions API: the messages' contents, one per paragraph."""
        return "\n\n".join(m["content"] for m in self.messages)

    @property
    def turns(self) -> int:
        return 1 + len(self.followups)

    def next_turn(self, answer: str, turn: int) -> Prompt:
        """Turn `turn` (2, 3, ...) after this one, which the model answered with `answer`."""
        content, max_tokens = self.followups[turn - 2]
        history = (*self.messages, {"role": "assistant", "content": answer}, {"role": "user", "content": content})
        return Prompt(history, max_tokens, self.followups)


def _draw(rng: random.Random, lengths: Lengths) -> int:
    return rng.randint(lengths.low, lengths.high)


def from_text(
    text: str,
    input_len: Lengths,
    output_len: Lengths,
    seed: int,
    count: int = POOL,
    *,
    turns: int = 1,
    system_len: int = 0,
) -> list[Prompt]:
    """`count` conversations of `turns` user turns, each asking to continue a passage of about
    `input_len` tokens; with `system_len`, every conversation starts with the same system prompt of
    about that many tokens (the shape of an assistant deployed with one instruction)."""
    words = text.split()
    if not words:
        raise ConfigError("the text to draw prompts from is empty: give a {text} file with prose in it", field="text")
    rng = random.Random(seed)

    def passage(tokens: int) -> str:
        n = max(1, round(tokens * WORDS_PER_TOKEN))
        start = rng.randrange(max(1, len(words) - n))
        return " ".join(words[start : start + n])

    head: tuple[dict[str, str], ...] = ()
    if system_len:
        head = (
            {"role": "system", "content": f"You are a writing assistant. Your style guide:\n\n{passage(system_len)}"},
        )
    prompts = []
    for _ in range(count):
        first = {"role": "user", "content": f"Continue this text:\n\n{passage(_draw(rng, input_len))}"}
        later = tuple(
            (f"Now continue this one:\n\n{passage(_draw(rng, input_len))}", _draw(rng, output_len))
            for _ in range(turns - 1)
        )
        prompts.append(Prompt((*head, first), _draw(rng, output_len), later))
    return prompts


def _messages(record: Any, where: str, turns: int = 1) -> tuple[tuple[dict[str, str], ...], tuple[str, ...]]:
    """(the first turn's messages, the later user turns) of one record: OpenAI {"messages": [...]},
    ShareGPT {"conversations": [{"from", "value"}...]}, or {"prompt": "..."}.

    With `turns` = 1, an OpenAI record is sent as it is and a ShareGPT one up to its first human
    turn. With more, the first turn runs to the first user message, and the next `turns` − 1 user
    messages follow; the record's own assistant answers are dropped (the model answers itself)."""
    if isinstance(record, dict) and isinstance(record.get("messages"), list):
        msgs = record["messages"]
        if msgs and all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in msgs):
            out = tuple({"role": str(m["role"]), "content": m["content"]} for m in msgs)
            return (out, ()) if turns == 1 else _split_turns(out, turns)
    if isinstance(record, dict) and isinstance(record.get("conversations"), list):
        roles = {"human": "user", "user": "user", "system": "system", "gpt": "assistant", "assistant": "assistant"}
        msgs = []
        for turn in record["conversations"]:
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                break
            role = roles.get(str(turn.get("from")))
            if role is None:
                break
            msgs.append({"role": role, "content": turn["value"]})
        if any(m["role"] == "user" for m in msgs):
            return _split_turns(tuple(msgs), turns)
    if isinstance(record, dict) and isinstance(record.get("prompt"), str) and record["prompt"].strip():
        return ({"role": "user", "content": record["prompt"]},), ()
    raise ConfigError(
        f'{where}: not an OpenAI messages record ({{"messages": [{{"role", "content"}}]}}), a ShareGPT '
        'conversation ({"conversations": [{"from": "human", "value"}]}) or {"prompt": TEXT}; fix {prompts}',
        field="prompts",
    )


def _split_turns(msgs: tuple[dict[str, str], ...], turns: int) -> tuple[tuple[dict[str, str], ...], tuple[str, ...]]:
    first = next(i for i, m in enumerate(msgs) if m["role"] == "user")
    head = tuple(m for m in msgs[: first + 1] if m["role"] != "assistant")
    later = tuple(m["content"] for m in msgs[first + 1 :] if m["role"] == "user")
    return head, later[: turns - 1]


def from_file(path: Path, output_len: Lengths, seed: int, *, turns: int = 1) -> list[Prompt]:
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
        head, later = _messages(record, f"{path} line {number}", turns)
        prompts.append(Prompt(head, _draw(rng, output_len), tuple((c, _draw(rng, output_len)) for c in later)))
    if not prompts:
        raise ConfigError(f"{{prompts}} {path} holds no prompt: give one JSON record per line", field="prompts")
    return prompts


def sha256(prompts: list[Prompt]) -> str:
    """Of the prompts and their output lengths, in order: what exactly was sent."""
    data = json.dumps(
        [[list(p.messages), p.max_tokens, *([list(p.followups)] if p.followups else [])] for p in prompts],
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(data.encode("utf-8")).hexdigest()
