"""Bad input to `wattlm bench`: one line on stderr, exit code 2, no traceback, nothing written."""

import sys

import pytest

from tests.tiny import save_inputs, save_tiny  # noqa: E402
from wattlm import cli  # noqa: E402

FAST = (
    "--seq-len 32 --max-tokens 256 --min-phase-s 0.05 --repeats 1 --prompt-len 8 --new-tokens 4 --device cpu"
).split()


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save_inputs(tmp_path_factory.mktemp("good"), "To be, or not to be, that is the question. " * 30)


def run_cli(monkeypatch, capsys, args):
    monkeypatch.setattr(sys, "argv", ["wattlm", "bench", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def _corrupt_safetensors(d):
    save_tiny(d)
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated mid-header


def _unknown_arch(d):
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "no-such-arch"}')


def _pickle_weights(d):
    """A pytorch_model.bin that holds more than tensors: unpickling it could run code."""
    import pathlib

    import torch

    save_tiny(d)
    (d / "model.safetensors").unlink()
    torch.save(
        {"model.embed_tokens.weight": torch.zeros(2, 2), "extra": pathlib.PurePosixPath("anything")},
        d / "pytorch_model.bin",
    )


CASES = {
    "pickle weights": (_pickle_weights, ["--model", "{d}"], "convert it to safetensors"),
    "missing model": (lambda d: None, ["--model", "{d}/nope"], "no such"),
    "corrupt gguf": (
        lambda d: (d.parent / "x.gguf").write_bytes(b"GGUF\x03\x00garbage"),
        ["--model", "{t}/x.gguf"],
        "not a readable GGUF",
    ),
    "truncated safetensors": (_corrupt_safetensors, ["--model", "{d}"], "could not load"),
    "unknown architecture": (_unknown_arch, ["--model", "{d}"], "could not load"),
    "empty text": (lambda d: (d.parent / "e.txt").write_text("  \n"), ["--text", "{t}/e.txt"], "no text"),
    "not utf-8": (
        lambda d: (d.parent / "l.txt").write_bytes("café".encode("latin-1")),
        ["--text", "{t}/l.txt"],
        "not UTF-8",
    ),
    "shorter than a window": (
        lambda d: (d.parent / "s.txt").write_text("tiny"),
        ["--text", "{t}/s.txt"],
        "fewer than one window",
    ),
    "unknown variant": (lambda d: None, ["--variants", "fp32,int3"], "unknown variant step 'int3'"),
    "seq-len over context": (
        lambda d: None,
        ["--seq-len", "200", "--max-tokens", "1000"],
        "larger than the model's context",
    ),
    "max-tokens under seq-len": (lambda d: None, ["--max-tokens", "16"], "must be at least --seq-len"),
    "bad batch sizes": (lambda d: None, ["--batch-sizes", "1,x"], "--batch-sizes"),
    "bad device": (lambda d: None, ["--device", "tpu"], "--device"),
    "one new token": (lambda d: None, ["--new-tokens", "1"], "--new-tokens"),
    "text and dataset": (lambda d: None, ["--dataset", "wikitext"], "not both"),
    "out under a file": (lambda d: (d.parent / "f").write_text("x"), ["--out", "{t}/f/run"], "not a writable folder"),
    "not a run to resume": (lambda d: d.mkdir(), ["--resume", "{d}"], "not a wattlm run directory"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, good, tmp_path, monkeypatch, capsys):
    prepare, extra, message = CASES[case]
    d = tmp_path / "case"
    prepare(d)
    capsys.readouterr()  # what preparing the case printed
    args = ["--model", str(good / "model"), "--text", str(good / "text.txt"), *FAST, "--out", str(tmp_path / "run")]
    extra = [a.format(d=d, t=tmp_path) for a in extra]
    if "--resume" in extra:
        args = extra  # --resume takes no other options
    else:
        args += extra
    code, err = run_cli(monkeypatch, capsys, args)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("!")]  # "!" = estimate warning
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_never_overwritten(good, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text('{"variant": "fp32"}\n')
    args = ["--model", str(good / "model"), "--text", str(good / "text.txt"), *FAST, "--out", str(run)]
    code, err = run_cli(monkeypatch, capsys, args)
    assert code == 2 and "--resume" in err
    assert (run / "results.jsonl").read_text() == '{"variant": "fp32"}\n'
    assert sorted(p.name for p in run.iterdir()) == ["results.jsonl"]
