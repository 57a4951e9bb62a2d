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


BPE_TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and arrows "
    "of outrageous fortune, or to take arms against a sea of troubles and by opposing end them. 1234 5678!\n" * 4
)


def tiny_bpe_tokenizer(vocab: int = 300):
    """A byte-level BPE tokenizer (GPT-2 style pre-tokenizer) trained on a fixed text: what GGUF export writes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([BPE_TEXT], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
