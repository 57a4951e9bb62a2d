"""GGUF export: tensors and keys that both transformers' GGUF reader and llama.cpp read back to the
same model; tokenizer carried over; pruned, depth-dropped and quantized models; refusals."""

from __future__ import annotations

import os

import pytest
import torch

from tests.tiny import BPE_TEXT, tiny_bpe_tokenizer, tiny_llama
from wattlm.engines import gguf_export, gguf_vocab
from wattlm.errors import InvalidInputError

pytestmark = pytest.mark.engines  # needs the llama.cpp extra


def llama_cpp_or_skip():
    """CI installs the extra (README test command): there a missing llama_cpp is a failure, not a skip."""
    if os.environ.get("CI"):
        import llama_cpp  # noqa: F401
    else:
        pytest.importorskip("llama_cpp")


def one_line(stderr: str) -> bool:
    """One error line (progress bars may leave blank lines), no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("error: ")


@pytest.fixture
def tok():
    return tiny_bpe_tokenizer()


def model(vocab: int = 304, layers: int = 2, seed: int = 0):
    return tiny_llama(seed=seed, vocab=vocab, layers=layers)


def ids(n: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 300, (1, n), generator=torch.Generator().manual_seed(seed))


def reread(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def test_f32_file_reads_back_in_transformers_to_the_same_logits(tok, tmp_path):
    m = model()
    path = tmp_path / "m.gguf"
    gguf_export.write_float_gguf(m, path, "f32", "tiny", gguf_vocab.hf_vocab(tok, "gpt-2"))
    with torch.no_grad():
        assert torch.equal(m(ids()).logits, reread(path)(ids()).logits)  # the rotary reordering is undone exactly


def test_tokenizer_keys_and_chat_template_are_written_and_copied(tok, tmp_path):
    import gguf

    tok.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}"
    gguf_export.write_float_gguf(model(), tmp_path / "a.gguf", "f16", "tiny", gguf_vocab.hf_vocab(tok, "gpt-2"))
    gguf_export.write_float_gguf(
        model(), tmp_path / "b.gguf", "f32", "tiny", gguf_vocab.copy_vocab(tmp_path / "a.gguf")
    )
    for name in ("a.gguf", "b.gguf"):
        fields = gguf.GGUFReader(str(tmp_path / name)).fields
        tokens = fields["tokenizer.ggml.tokens"].contents()
        assert (
            len(tokens) == 304
            and tokens[:300] == tok.convert_ids_to_tokens(list(range(300)))
            and tokens[300] == "[PAD300]"
        )
        assert fields["tokenizer.ggml.token_type"].contents()[:3] == [
            gguf.TokenType.CONTROL,
            gguf.TokenType.CONTROL,
            gguf.TokenType.NORMAL,
        ]
        assert fields["tokenizer.chat_template"].contents() == tok.chat_template
        assert (
            fields["tokenizer.ggml.pre"].contents() == "gpt-2" and fields["tokenizer.ggml.bos_token_id"].contents() == 0
        )
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "a.gguf")).tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"  # norms stay F32


def test_rotary_reordering_pairs_the_halves_of_each_head():
    w = torch.arange(8.0)[:, None]  # 2 heads of 4 rows: [x0 x1 y0 y1] per head
    assert gguf_export.rotary_to_pairs(w, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_shapes_of_width_and_depth_pruned_models():
    from wattlm.compress.structured import drop_layers_

    m = model(layers=3)
    for layer in m.model.layers:  # what width pruning leaves: 2 of 4 query heads (1 per kv group), 40 of 64 channels
        a, f = layer.self_attn, layer.mlp
        a.q_proj = torch.nn.Linear(32, 2 * 8, bias=False)
        a.o_proj = torch.nn.Linear(2 * 8, 32, bias=False)
        f.gate_proj, f.up_proj, f.down_proj = (
            torch.nn.Linear(32, 40, bias=False),
            torch.nn.Linear(32, 40, bias=False),
            torch.nn.Linear(40, 32, bias=False),
        )
    drop_layers_(m, [1])
    s = gguf_export.shapes(m)
    assert (s.layers, s.heads, s.kv_heads, s.ff, s.head_dim) == (2, [2, 2], [2, 2], [40, 40], 8)


def test_refuses_other_architectures_and_biases():
    from transformers import GPT2Config, LlamaConfig

    with pytest.raises(InvalidInputError, match="Llama-family"):
        gguf_export.check_exportable(GPT2Config())
    with pytest.raises(InvalidInputError, match="biases"):
        gguf_export.check_exportable(LlamaConfig(attention_bias=True))
    with pytest.raises(InvalidInputError, match="rope scaling"):
        gguf_export.check_exportable(
            LlamaConfig(
                rope_scaling={
                    "rope_type": "yarn",
                    "factor": 4.0,
                    "rope_theta": 1e4,
                    "original_max_position_embeddings": 64,
                }
            )
        )


def test_non_bpe_tokenizer_refused():
    from tests.tiny import tiny_tokenizer

    with pytest.raises(InvalidInputError, match="byte-level BPE"):
        gguf_vocab.hf_vocab(tiny_tokenizer(), "gpt-2")


# -- through llama.cpp ---------------------------------------------------------------------------


def export(m, tok, path, quant, source=None):
    from wattlm.engines.export import export_gguf

    return export_gguf(m, tok, path, quant, name="tiny", source_gguf=source, threads=2, probe_text=BPE_TEXT)


def engine(path):
    from wattlm.engines.llamacpp import LlamaCppModel

    return LlamaCppModel(path, threads=2)


def hf_logits(m, row):
    with torch.no_grad():
        return m(row).logits[0]


def test_llamacpp_logits_tokens_and_greedy_decode_match_transformers(tok, tmp_path):
    llama_cpp_or_skip()
    m = model()
    info = export(m, tok, tmp_path / "m.gguf", "f32")
    assert info["tokenizer"]["pre_found"] and info["tokenizer"]["probe_agrees"], info["tokenizer"]
    e = engine(tmp_path / "m.gguf")
    row = ids(32)
    got, want = e.window_logits(row[0]), hf_logits(m, row)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    text = "whether 'tis nobler in the mind, 1234!"
    assert e.tokenize(text) == tok(text, add_special_tokens=False)["input_ids"]
    # greedy decoding, a batch of two different prompts: each row as transformers decodes it alone
    from wattlm.evaluate.speed import greedy_generate

    prompts = torch.cat([ids(12, seed=2), ids(12, seed=3)])
    out = e.generate_call(prompts, 6)()
    assert out.tolist() == [greedy_generate(m, prompts[i : i + 1], 6)[0].tolist() for i in range(2)]
    assert e.prefill_call(prompts)() == out[:, 0].tolist()
    assert e.stats()["params_total"] == sum(p.numel() for p in m.parameters())
    e.close()


def test_quantized_exports_stay_close_and_shrink(tok, tmp_path):
    llama_cpp_or_skip()
    m = model(vocab=304)
    row = ids(32)
    want = torch.log_softmax(hf_logits(m, row).double(), -1)
    sizes = {}
    for quant, max_kl in (("f16", 1e-4), ("q8_0", 2e-3)):
        info = export(m, tok, tmp_path / f"{quant}.gguf", quant)
        got = torch.log_softmax(engine(tmp_path / f"{quant}.gguf").window_logits(row[0]).double(), -1)
        kl = float((want.exp() * (want - got)).sum(-1).mean())
        assert -1e-9 <= kl < max_kl, (quant, kl)
        sizes[quant] = info["bytes"]
    assert sizes["q8_0"] < sizes["f16"]


def test_pruned_shared_and_int8_models_export_to_the_logits_they_compute(tok, tmp_path):
    llama_cpp_or_skip()
    from wattlm.compress.config import config_from_name
    from wattlm.compress.registry import compress_

    calibration = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(5))
    for name in ("struct25", "struct40-layers", "int8"):
        m = model(layers=4)
        compress_(m, config_from_name(name), calibration=calibration)
        path = tmp_path / f"{name}.gguf"
        info = export(m, tok, path, "f32")
        row = ids(24)
        got, want = engine(path).window_logits(row[0]), hf_logits(m, row)
        assert torch.allclose(got, want, atol=2e-3, rtol=1e-3), (name, (got - want).abs().max())
        s = gguf_export.shapes(m)
        assert (info["layers"], info["heads"], info["ff"]) == (s.layers, s.heads[0], s.ff[0])
    assert s.layers == 4 and info["ff"] == 64  # int8 keeps the shapes


def test_export_is_atomic_and_refuses_to_overwrite(tok, tmp_path):
    llama_cpp_or_skip()
    from wattlm.engines.export import check_target

    path = tmp_path / "m.gguf"
    path.write_bytes(b"keep")
    with pytest.raises(InvalidInputError, match="already exists"):
        check_target(path)
    with pytest.raises(InvalidInputError, match="ending in .gguf"):
        check_target(tmp_path / "m.bin")
    with pytest.raises(InvalidInputError, match="not one of"):
        export(model(), tok, tmp_path / "x.gguf", "q9_9")
    assert path.read_bytes() == b"keep" and sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_corrupt_gguf_and_missing_engine_are_one_line_errors(tmp_path, monkeypatch):
    llama_cpp_or_skip()
    from wattlm.engines import llamacpp

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(200))
    with pytest.raises(InvalidInputError, match="llama.cpp could not load"):
        llamacpp.LlamaCppModel(bad, threads=1)
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)
    llamacpp.lib.cache_clear()
    try:
        with pytest.raises(InvalidInputError, match=r"pip install 'wattlm\[llamacpp\]'"):
            llamacpp.lib()
    finally:
        monkeypatch.undo()
        llamacpp.lib.cache_clear()
