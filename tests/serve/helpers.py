"""A tiny GGUF for serving tests: a seeded random Llama with a byte-level BPE vocabulary and a chat
template, exported by wattlm's own GGUF writer."""

from __future__ import annotations

from pathlib import Path

from tests.engines.test_export import llama_cpp_or_skip
from tests.tiny import tiny_bpe_tokenizer, tiny_llama

CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_gguf(folder: Path) -> Path:
    llama_cpp_or_skip()
    from wattlm.engines.export import export_gguf

    tokenizer = tiny_bpe_tokenizer()
    tokenizer.chat_template = CHAT
    path = folder / "tiny.gguf"
    export_gguf(tiny_llama(vocab=len(tokenizer), layers=2), tokenizer, path, "f32", name="tiny", threads=1)
    return path
