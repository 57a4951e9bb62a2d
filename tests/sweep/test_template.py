"""Server templates and grids: placeholders checked against the grid before anything starts, values
that fill whole arguments (no shell), built-ins that turn knobs into the server's own options."""

import sys

import pytest

from wattlm.errors import ConfigError, InvalidInputError
from wattlm.sweep import Template, parse_grid
from wattlm.sweep.config import parse_slo
from wattlm.sweep.template import Configuration, parse_assignments


def test_a_grid_is_parsed_and_checked():
    assert parse_grid(["slots=1,2,4,8", "threads=1, 2"]) == {"slots": ("1", "2", "4", "8"), "threads": ("1", "2")}
    for bad, words in (
        (["slots"], "give NAME=V1,V2"),
        (["slots="], "empty value"),
        (["slots=1,,2"], "empty value"),
        (["slots=1", "slots=2"], "given twice"),
        (["slots=1,1"], "repeated"),
        (["gpu_power_limit_w=abc"], "positive number"),
        (["port=1,2"], "filled by the sweep"),
        (["9lives=1"], "give NAME=V1,V2"),
    ):
        with pytest.raises(InvalidInputError, match=words):
            parse_grid(bad)


def test_placeholders_must_match_the_grid_and_port_is_required():
    grid = {"slots": ("1", "2")}
    t = Template.parse("srv -m {model} -np {slots} --port {port}", grid)
    assert t.builtin is None and t.health == "/v1/models"
    with pytest.raises(InvalidInputError, match="no \\{port\\} placeholder"):
        Template.parse("srv -np {slots}", grid)
    with pytest.raises(InvalidInputError, match=r"placeholders no grid fills: \{threads\}"):
        Template.parse("srv -np {slots} -t {threads} --port {port}", grid)
    with pytest.raises(InvalidInputError, match="knob slots is not a placeholder"):
        Template.parse("srv --port {port}", grid)
    with pytest.raises(InvalidInputError, match="No closing quotation"):
        Template.parse("srv 'unclosed --port {port}", grid)
    with pytest.raises(InvalidInputError, match="is empty"):
        Template.parse("   ", grid)


def test_values_fill_whole_arguments_and_never_reach_a_shell():
    grid = {"name": ("a b; touch /tmp/x", "$(reboot)")}
    t = Template.parse("srv --name={name} --port {port} --tag '{name} x'", grid)
    configs = t.configurations(grid, None)
    assert t.command(configs[0], port=8000, model=None) == [
        "srv",
        "--name=a b; touch /tmp/x",
        "--port",
        "8000",
        "--tag",
        "a b; touch /tmp/x x",
    ]
    assert t.command(configs[1], port=1, model=None)[1] == "--name=$(reboot)"


def test_builtins_pass_knobs_as_their_own_options_and_measure_their_default():
    serve = Template.parse("serve", {"max_batch": ("1", "8")})
    configs = serve.configurations({"max_batch": ("1", "8")}, None)
    assert [c.id for c in configs] == ["default", "max_batch=1", "max_batch=8"]
    assert configs[0].default and configs[2].server_batch() == 8
    cmd = serve.command(configs[2], port=9, model="m.gguf")
    assert cmd[:4] == [sys.executable, "-m", "wattlm", "serve"] and cmd[-2:] == ["--max-batch", "8"]
    assert "--port" in cmd and "9" in cmd and "m.gguf" in cmd
    assert serve.command(configs[0], port=9, model="m.gguf")[-1] == "127.0.0.1" or "--max-batch" not in serve.command(
        configs[0], port=9, model="m"
    )
    llama = Template.parse("llama-server", {"slots": ("4",)})
    (default, four) = llama.configurations({"slots": ("4",)}, None)
    assert llama.command(four, port=1, model="m")[-2:] == ["--parallel", "4"] and four.server_batch() == 4
    py = Template.parse("llama-cpp-python", {"threads": ("2",)})
    assert py.command(py.configurations({"threads": ("2",)}, None)[1], port=1, model="m")[-2:] == ["--n_threads", "2"]


def test_a_default_configuration_of_your_own_is_measured_once():
    grid = {"slots": ("1", "2"), "gpu_power_limit_w": ("300",)}
    t = Template.parse("srv -np {slots} --port {port}", grid)
    configs = t.configurations(grid, {"slots": "1", "gpu_power_limit_w": "300"})
    assert [c.id for c in configs] == ["default(slots=1,gpu_power_limit_w=300)", "slots=2,gpu_power_limit_w=300"]
    assert configs[0].gpu_knobs == {"gpu_power_limit_w": 300.0} and configs[0].server_knobs == {"slots": "1"}
    assert t.command(configs[1], port=5, model=None) == ["srv", "-np", "2", "--port", "5"]
    with pytest.raises(InvalidInputError, match="no value for slots"):
        t.configurations(grid, {"gpu_power_limit_w": "300"})
    with pytest.raises(InvalidInputError, match="not a grid knob"):
        t.configurations(grid, {"slots": "1", "threads": "2"})
    assert Configuration({"a": "1/2"}).slug == "a=1_2" and Configuration({}, default=True).slug == "default"


def test_slo_and_assignments_are_parsed():
    assert parse_slo("itl_p50=0.05,ttft_p90=2s") == {"itl_p50": 0.05, "ttft_p90": 2.0}
    for bad in ("itl=0.05", "itl_p77=1", "speed_p50=1", "itl_p50=-1", "itl_p50"):
        with pytest.raises(ConfigError, match="METRIC_STAT=SECONDS"):
            parse_slo(bad)
    assert parse_assignments("slots=1, threads=2", "default") == {"slots": "1", "threads": "2"}
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_assignments("slots", "default")
