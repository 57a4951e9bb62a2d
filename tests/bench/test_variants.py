import pytest
import torch

from tests.tiny import tiny_llama  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402
from wattlm.variants import Context, Step, register, resolve, resolve_all  # noqa: E402
from wattlm.variants import spec as variants  # noqa: E402


def test_precision_steps_set_the_dtype_and_convert_the_model():
    v = resolve("bf16")
    assert v.dtype == "bf16" and [s.name for s in v.steps] == ["bf16"]
    model = v.build(tiny_llama(), Context(device=torch.device("cpu")))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert resolve("compile").dtype == "fp32"  # no precision step: fp32


def test_compile_is_a_modifier_that_must_come_last():
    assert [s.name for s in resolve("fp16+compile").steps] == ["fp16", "compile"]
    with pytest.raises(InvalidInputError, match="compile must be the last step"):
        resolve("compile+bf16")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("int3", "unknown variant step 'int3'.*known: .*bf16"),
        ("bf16+fp16", "sets the precision twice"),
        ("bf16+", "empty step"),
        ("", "empty"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(InvalidInputError, match=message):
        resolve(spec)


def test_a_variant_listed_twice_is_refused():
    with pytest.raises(InvalidInputError, match="listed twice"):
        resolve_all("fp32,bf16,fp32")


def test_other_modules_register_steps_by_pattern_without_touching_the_harness(monkeypatch):
    monkeypatch.setattr(variants, "_PATTERNS", list(variants._PATTERNS))

    def make(match):
        factor = int(match.group(1)) / 100

        def apply(model, context):
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(factor)
            return model

        return Step(match.group(0), apply, doc="scale weights")

    register(r"scale(\d+)", make, pattern=True)
    v = resolve("bf16+scale50")
    assert v.dtype == "bf16"
    base, scaled = tiny_llama(seed=1), v.build(tiny_llama(seed=1), Context(device=torch.device("cpu")))
    w0, w1 = base.model.layers[0].mlp.up_proj.weight, scaled.model.layers[0].mlp.up_proj.weight
    assert torch.allclose(w1.float(), (w0 * 0.5).bfloat16().float())


def test_quantization_steps_resolve_by_name_and_warn_before_the_run_where_no_kernel_is_fast():
    cpu = torch.device("cpu")
    v = resolve("bf16+gptq4-g64", cpu)
    assert v.dtype == "bf16" and v.calibrated and [s.name for s in v.steps] == ["bf16", "gptq4-g64"]
    assert not resolve("int8", cpu).calibrated
    (warning,) = resolve("int4-g16", cpu).warnings(cpu)  # torch's CPU int4 kernel takes groups of 32 to 256
    assert warning.startswith("int4-g16: slow path on cpu") and "de-quantized" in warning
    with pytest.raises(InvalidInputError, match="fp8 cannot run on cpu"):
        resolve("fp8", cpu).warnings(cpu)
    with pytest.raises(InvalidInputError, match="GPTQ bits must be 2, 3, 4 or 8"):
        resolve("gptq5-g64")
