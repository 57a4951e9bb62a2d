"""The CLI layer: errors name config fields for Python users and flags for CLI users, --resume is
checked against the options actually typed, defaults come from the configs, and the step and
handler tables resolve without import cycles."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from wattlm.bench.config import BenchConfig
from wattlm.errors import ConfigError
from wattlm.train.config import TrainConfig

WATTLM = [sys.executable, "-m", "wattlm"]
SRC = Path(__file__).resolve().parents[1] / "src" / "wattlm"


def run(*args):
    return subprocess.run([*WATTLM, *args], capture_output=True, text=True, timeout=60)


def test_a_python_user_is_told_the_field_a_cli_user_the_flag():
    with pytest.raises(ConfigError) as e:
        BenchConfig(prompt_len=600, seq_len=512)
    assert str(e.value) == "prompt_len (600) cannot exceed seq_len (512)" and e.value.field == "prompt_len"
    r = run("bench", "--prompt-len", "600", "--offline")
    assert r.returncode == 2 and r.stderr.strip() == "error: --prompt-len (600) cannot exceed --seq-len (512)"
    with pytest.raises(ConfigError, match=r"^near_threshold must lie in \(0, 1\], got 2"):
        TrainConfig(near_threshold=2.0)
    r = run("train", "--near-threshold", "2", "--offline")
    assert r.returncode == 2 and "error: --near-threshold must lie in (0, 1], got 2.0" in r.stderr


def test_resume_refuses_an_option_typed_even_at_its_default_value(tmp_path):
    # Comparing values with the defaults could not see `--seq-len 512`; the parameter source does.
    r = run("bench", "--resume", str(tmp_path), "--seq-len", "512")
    assert r.returncode == 2 and "(leave out --seq-len)" in r.stderr
    r = run("train", "--resume", str(tmp_path), "--lr", "5e-05")
    assert r.returncode == 2 and "(leave out --lr)" in r.stderr
    r = run("bench", "--retry-failed")
    assert r.returncode == 2 and "--retry-failed goes with --resume" in r.stderr


def test_option_defaults_are_the_configs_own():
    from wattlm.cli.bench import bench
    from wattlm.cli.train import train

    for command, config in ((bench, BenchConfig()), (train, TrainConfig())):
        defaults = {name: p.default for name, p in __import__("inspect").signature(command).parameters.items()}
        for f in dataclasses.fields(config):
            if f.name in defaults and f.name not in ("text", "calib_text", "batch_sizes"):
                assert defaults[f.name] == getattr(config, f.name), (command.__name__, f.name)


def test_step_and_handler_tables_resolve_and_their_modules_do_not_import_the_registries():
    from wattlm.compress import registry
    from wattlm.compress.config import CONFIGS
    from wattlm.variants import spec as variants

    for module in variants.STEP_MODULES:
        source = (SRC / (module.removeprefix("wattlm.").replace(".", "/") + ".py")).read_text()
        assert "from .variants" not in source and "import variants" not in source, module
    assert variants.resolve("bf16+wanda50+int8").dtype == "bf16"
    for config_type in CONFIGS.values():
        assert callable(registry.handler_of(config_type())), config_type
    for module, _ in registry.HANDLERS.values():
        assert "from .registry" not in (SRC / "compress" / f"{module}.py").read_text(), module
