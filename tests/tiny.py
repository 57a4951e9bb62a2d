"""Tiny seeded random causal LMs built from a config, for tests (no downloads)."""

from __future__ import annotations

from pathlib import Path


def tiny_llama(seed: int = 0, vocab: int = 96, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval()


def tiny_tokenizer(vocab: int = 96):
    """A character-level tokenizer: ids 0..vocab-1 over printable ASCII."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 32 + vocab - 1)]
    table = {"<unk>": 0, **{ch: i + 1 for i, ch in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def save_tiny(path: Path, seed: int = 0) -> Path:
    model, tok = tiny_llama(seed), tiny_tokenizer()
    model.save_pretrained(path)  # safetensors
    tok.save_pretrained(path)
    return path


def save_inputs(folder: Path, text: str, seed: int = 0) -> Path:
    """`folder/model` (a tiny saved model) and `folder/text.txt`: the inputs of a CLI test."""
    save_tiny(folder / "model", seed=seed)
    (folder / "text.txt").write_text(text, encoding="utf-8")
    return folder
