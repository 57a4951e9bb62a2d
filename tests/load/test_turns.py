"""Multi-turn conversations in `wattlm load`: each turn resends the history with the model's own
answers, from drawn prompts (with a shared system prompt) and from ShareGPT files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.fakes.openai_server import FakeOpenAI
from wattlm.errors import ConfigError
from wattlm.load.config import Lengths, LoadConfig
from wattlm.load.prompts import from_file, from_text


def test_drawn_conversations_share_one_system_prompt_and_have_their_turns():
    text = " ".join(f"w{i}" for i in range(5000))
    a = from_text(text, Lengths(40, 40), Lengths(8, 8), seed=1, count=10, turns=4, system_len=100)
    systems = {p.messages[0]["content"] for p in a}
    assert len(systems) == 1 and len(next(iter(systems)).split()) > 70
    assert all(p.turns == 4 and [m["role"] for m in p.messages] == ["system", "user"] for p in a)
    nxt = a[0].next_turn("an answer", 2)
    assert [m["role"] for m in nxt.messages] == ["system", "user", "assistant", "user"]
    assert nxt.messages[2]["content"] == "an answer" and nxt.messages[3]["content"] == a[0].followups[0][0]
    third = nxt.next_turn("again", 3)
    assert third.messages[: len(nxt.messages)] == nxt.messages and third.messages[-1]["content"] == a[0].followups[1][0]
    single = from_text(text, Lengths(40, 40), Lengths(8, 8), seed=1, count=10)
    assert all(p.turns == 1 and [m["role"] for m in p.messages] == ["user"] for p in single)


def test_sharegpt_turns_replace_the_recorded_answers(tmp_path):
    f = tmp_path / "c.jsonl"
    turns = [
        {"from": "system", "value": "be kind"},
        {"from": "human", "value": "one"},
        {"from": "gpt", "value": "recorded answer"},
        {"from": "human", "value": "two"},
        {"from": "gpt", "value": "another"},
        {"from": "human", "value": "three"},
    ]
    f.write_text(json.dumps({"conversations": turns}) + "\n")
    (p,) = from_file(f, Lengths(8, 8), seed=0, turns=3)
    assert p.messages == ({"role": "system", "content": "be kind"}, {"role": "user", "content": "one"})
    assert [c for c, _ in p.followups] == ["two", "three"]
    (short,) = from_file(f, Lengths(8, 8), seed=0, turns=2)
    assert [c for c, _ in short.followups] == ["two"]
    (one,) = from_file(f, Lengths(8, 8), seed=0)
    assert one.followups == () and one.messages[-1]["content"] == "one"


def test_turn_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="turns"):
        LoadConfig(url="http://127.0.0.1:1/v1", concurrencies=(1,), turns=0)
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "x"}\n')
    with pytest.raises(ConfigError, match="a prompts file brings its own"):
        LoadConfig(url="http://127.0.0.1:1/v1", concurrencies=(1,), prompts=f, system_prompt_len=10)


def test_load_replays_conversations_turn_by_turn(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be that is the question " * 50)
    run = tmp_path / "run"
    with FakeOpenAI(itl_s=0.001) as server:
        r = subprocess.run(
            [sys.executable, "-m", "wattlm", "load", "--url", server.url, "--concurrency", "2", "--duration", "1.5"]
            + ["--warmup", "0.2", "--turns", "3", "--system-prompt-len", "20", "--text", str(text)]
            + ["--output-len", "4", "--input-len", "8", "--json", "--out", str(run)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        bodies = [b for b in server.bodies if "messages" in b]
    shapes = {tuple(m["role"] for m in b["messages"]) for b in bodies}
    assert ("system", "user") in shapes
    assert ("system", "user", "assistant", "user") in shapes
    assert ("system", "user", "assistant", "user", "assistant", "user") in shapes
    assert not any(len(s) > 6 for s in shapes)  # three turns, never a fourth
    answers = {m["content"] for b in bodies for m in b["messages"] if m["role"] == "assistant"}
    assert answers == {"tok " * 4}  # the server's own answer, streamed back whole
    lines = [json.loads(x) for x in (run / "requests.jsonl").read_text().splitlines()]
    assert {x["turn"] for x in lines} == {1, 2, 3}
    by_conversation: dict[int, list[int]] = {}
    for x in lines:
        by_conversation.setdefault(x["conversation"], []).append(x["turn"])
    assert all(t == list(range(1, len(t) + 1)) for t in by_conversation.values())  # in order, none skipped
    (level,) = json.loads(r.stdout)
    assert [t["turn"] for t in level["request_energy"]["by_turn"]] == [1, 2, 3]
