import gguf  # noqa: F401  (a hard dependency)
import pytest
import torch

from tests.tiny import save_tiny  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402
from wattlm.evaluate.perplexity import Protocol, make_windows  # noqa: E402
from wattlm.evaluate.quality import score  # noqa: E402
from wattlm.models.load import gguf_format, load_model, resolve_model  # noqa: E402


def test_local_directory_loads_the_same_model(tmp_path):
    from tests.tiny import tiny_llama

    save_tiny(tmp_path / "m", seed=5)
    spec = resolve_model(str(tmp_path / "m"))
    assert (spec.kind, spec.source_format) == ("dir", "safetensors")
    model, tok = load_model(spec)
    windows = make_windows(tok("All the world's a stage " * 12).input_ids, Protocol(seq_len=32, max_tokens=256))
    assert score(model, windows).result().nll == pytest.approx(
        score(tiny_llama(seed=5), windows).result().nll, rel=1e-6
    )
    bf16, _ = load_model(spec, dtype="bf16")
    assert next(bf16.parameters()).dtype == torch.bfloat16


def test_what_model_names_is_resolved_with_clear_errors(tmp_path):
    assert resolve_model("HuggingFaceTB/SmolLM2-135M").kind == "hub"
    with pytest.raises(InvalidInputError, match="no such GGUF"):
        resolve_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="config.json"):
        resolve_model(str(tmp_path / "empty"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00truncated")
    with pytest.raises(InvalidInputError, match="not a readable GGUF"):
        resolve_model(str(broken))


def test_gguf_source_format_is_read_from_the_header(tmp_path):
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_format(path) == "gguf:Q4_1"


def test_unknown_architecture_is_a_clear_error(tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "no-such-arch"}')
    with pytest.raises(InvalidInputError, match="could not load"):
        load_model(resolve_model(str(d)))
