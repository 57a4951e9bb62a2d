"""The run-directory format: written by bench and train, read by report and plan.

    <run>/run.json       what the run is (schema, kind, protocol, environment); written once, atomically
    <run>/results.jsonl  one JSON object per finished unit of work (a bench variant, a training epoch),
                         appended as whole lines

A process killed mid-run loses only the unit in progress: every line already in results.jsonl is
whole, and a reader skips (and reports) a last line cut short by a crash. Readers never import the
writers: this module is all they share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, InvalidInputError
from .fileio import append_lines, atomic_write_text

RUN_SCHEMA = "wattlm.run/1"
RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
REQUESTS_FILE = "requests.jsonl"  # wattlm load: one line per request, each tagged with its level's attempt
SERIES_FILE = "series.jsonl"  # wattlm load: each level attempt's energy series (to split again, or check)


@dataclass
class RunDir:
    path: Path
    info: dict[str, Any]
    skipped_lines: list[int] = field(default_factory=list)  # line numbers that were not whole JSON

    @classmethod
    def create(cls, path: str | Path, kind: str, info: dict[str, Any]) -> RunDir:
        """Start a new run in an empty or missing folder; never touches an existing run."""
        p = Path(path)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise ConfigError(
                f"{p} already exists and is not an empty folder: continue it with {{resume}} {p}, or choose another"
                " {out}",
                field="resume",
            )
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create {p} ({e.strerror}): choose a writable {{out}}", field="out") from e
        record = {"schema": RUN_SCHEMA, "kind": kind, **info}
        atomic_write_text(p / RUN_FILE, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        return cls(p, record)

    @classmethod
    def open(cls, path: str | Path, kind: str | None = None) -> RunDir:
        """Open an existing run (to resume it or to report on it)."""
        p = Path(path)
        run_file = p / RUN_FILE
        if not run_file.is_file():
            raise InvalidInputError(f"{p} is not a wattlm run directory (no {RUN_FILE})")
        try:
            info = json.loads(run_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"{run_file} is corrupt ({e}); the run cannot be read") from e
        if not isinstance(info, dict) or info.get("schema") != RUN_SCHEMA:
            raise InvalidInputError(f"{run_file} is not a {RUN_SCHEMA} record: written by another tool or version")
        if kind is not None and info.get("kind") != kind:
            raise InvalidInputError(f"{p} is a {info.get('kind')!r} run, not a {kind!r} run")
        return cls(p, info)

    def append(self, record: dict[str, Any]) -> None:
        """Add one finished unit as one whole line."""
        results = self.path / RESULTS_FILE
        line = json.dumps(record, ensure_ascii=False, allow_nan=False)
        # After a crash mid-write the file may end inside a line: close that line first, so the
        # fragment stays a skipped line of its own instead of swallowing this record.
        if results.exists() and results.stat().st_size > 0:
            with open(results, "rb") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    line = "\n" + line
        append_lines(results, [line])

    def append_requests(self, lines: list[dict[str, Any]]) -> None:
        """Add a level's requests, whole lines in one write."""
        if lines:
            append_lines(self.path / REQUESTS_FILE, [json.dumps(r, ensure_ascii=False, allow_nan=False) for r in lines])

    def append_series(self, record: dict[str, Any]) -> None:
        append_lines(self.path / SERIES_FILE, [json.dumps(record, allow_nan=False)])

    def series(self, attempt: str | None = None) -> list[dict[str, Any]]:
        return self._lines(SERIES_FILE, attempt)

    def requests(self, attempt: str | None = None) -> list[dict[str, Any]]:
        """The whole request lines (of one level attempt, if given)."""
        return self._lines(REQUESTS_FILE, attempt)

    def _lines(self, name: str, attempt: str | None) -> list[dict[str, Any]]:
        path = self.path / name
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and (attempt is None or r.get("attempt") == attempt):
                out.append(r)
        return out

    def records(self) -> list[dict[str, Any]]:
        """Every whole record; a line that is not whole JSON (a crash mid-write) is skipped and noted."""
        results = self.path / RESULTS_FILE
        self.skipped_lines = []
        if not results.exists():
            return []
        out = []
        for number, line in enumerate(results.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                self.skipped_lines.append(number)
                continue
            if isinstance(record, dict):
                out.append(record)
            else:
                self.skipped_lines.append(number)
        return out

    def newest(self, key: str) -> list[dict[str, Any]]:
        """The last whole record of each value of `key`, in the order the values first appeared: a unit
        run again (a retried variant, a resumed load level) counts by its newest record."""
        return list({str(r[key]): r for r in self.records() if key in r}.values())

    def finished(self, key: str = "variant") -> set[str]:
        """Values of `key` among the whole records: what a resumed run skips."""
        return {str(r[key]) for r in self.records() if key in r}


def query_energy_j(
    prompt_tokens: int, new_tokens: int, prefill_j_per_token: float | None, decode_j_per_token: float | None
) -> float | None:
    """Energy of one query of a bench run's shape: its prompt at the prefill J/token and its answer at
    the decode J/token (batch 1, or the run's first batch size). None where either figure is missing.
    The report rates variants by it and bench's rounds compare it round by round."""
    if prefill_j_per_token is None or decode_j_per_token is None:
        return None
    return prompt_tokens * prefill_j_per_token + new_tokens * decode_j_per_token
