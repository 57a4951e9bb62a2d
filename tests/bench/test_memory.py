import pytest
import torch

from tests.tiny import tiny_llama  # noqa: E402
from wattlm.evaluate.memory import PeakMemory, model_stats  # noqa: E402


def test_model_stats_count_tied_weights_once_and_zeros():
    model = tiny_llama()
    model.config.tie_word_embeddings = True
    model.tie_weights()
    expected = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[:, :10] = 0
    stats = model_stats(model)
    assert stats["params_total"] == expected
    assert stats["params_nonzero"] == expected - 10 * model.model.layers[0].mlp.up_proj.weight.shape[0]
    assert stats["model_bytes"] >= 4 * expected
    assert model_stats(model.to(torch.bfloat16))["model_bytes"] < stats["model_bytes"]


def test_peak_rss_is_reset_per_variant_when_the_kernel_allows(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "status").write_text("Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n")
    peak = PeakMemory(torch.device("cpu"), proc=proc)
    peak.reset()
    assert (proc / "clear_refs").read_text() == "5"
    assert peak.peak_bytes() == 2048 * 1024 and "during the prefill and decode phases" in peak.method
    real = PeakMemory(torch.device("cpu"))
    real.reset()
    if "refused" in real.method:
        pytest.skip("this kernel refuses to reset the peak RSS (/proc/self/clear_refs)")
    before = real.peak_bytes()  # the process as it is (torch imported), just after the reset
    big = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched
    after = real.peak_bytes()
    assert after - before >= 0.9 * big.numel() * 4  # the peak grew by what was allocated
