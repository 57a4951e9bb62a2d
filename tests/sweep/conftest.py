"""The sweep tests' environment: the fake servers (modules of the tests) importable by the servers the
sweep starts, GPU restore records in the test's own folder, and a text to draw prompts from."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("WATTLM_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def text(tmp_path):
    f = tmp_path / "text.txt"
    f.write_text(" ".join(f"word{i}" for i in range(3000)))
    return f
