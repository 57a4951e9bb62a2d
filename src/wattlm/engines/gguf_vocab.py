"""The tokenizer keys of a GGUF file: copied from the model's own GGUF, or built from a Hugging Face
byte-level BPE tokenizer (GPT-2 / Llama 3 / SmolLM / Qwen style).

llama.cpp splits text before BPE with one of a fixed set of pre-tokenizer regexes, named by
`tokenizer.ggml.pre`. llama.cpp's converter picks the name from a hash of a test tokenization; we
pick it by trying the candidates in llama.cpp itself (llamacpp.pick_pre) and keeping the first that
tokenizes a probe text exactly as the Hugging Face tokenizer does. Scoring in `wattlm bench` feeds
token ids, so perplexity never depends on this; a user who sends text to the exported file does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

# llama.cpp pre-tokenizer names for byte-level BPE vocabularies, most common first
PRE_CANDIDATES = (
    "smollm",
    "llama-bpe",
    "gpt-2",
    "qwen2",
    "starcoder",
    "gpt-4o",
    "deepseek-llm",
    "falcon",
    "olmo",
    "default",
)

PROBE_TEXT = (
    "Hello world!  It's 2026: 1234567 tokens, don't you THINK?\n\n    indented\tline\n"
    "café naïve résumé — 日本語のテキスト, 中文, русский; x=a+b*3.14; emoji 🙂 ok\r\n"
    "'quoted' \"double\" (parens) [brackets] {braces} <tags> #hash @at $5.00 100% a_b-c/d\\e"
)


def copy_vocab(source: Path) -> Callable[[Any, int], None]:
    """An `add_vocab` that copies every tokenizer.* key of the GGUF file `source`."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    fields = [f for name, f in reader.fields.items() if name.startswith("tokenizer.")]
    if not any(f.name == "tokenizer.ggml.tokens" for f in fields):
        raise InvalidInputError(
            f"{source} has no tokenizer in it; export from the model's folder (with its tokenizer files) instead"
        )

    def add(writer: Any, vocab_size: int) -> None:
        for f in fields:
            value = f.contents()
            sub_type = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(f.name, value, f.types[0], sub_type=sub_type)

    return add


def _merges(tokenizer: Any) -> list[str]:
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def check_bpe(tokenizer: Any) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if backend is not None else {}
    pre = json.loads(backend.to_str()).get("pre_tokenizer") if backend is not None else None
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(pre):
        raise InvalidInputError(
            "GGUF export writes byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM, Qwen style) from a Hugging Face "
            "tokenizer; this one is not (or is a slow tokenizer): export from the model's original .gguf, "
            "or convert with llama.cpp's convert_hf_to_gguf.py"
        )


def hf_vocab(tokenizer: Any, pre: str) -> Callable[[Any, int], None]:
    """An `add_vocab` for a fast byte-level BPE tokenizer, with pre-tokenizer name `pre`."""
    import gguf

    check_bpe(tokenizer)
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    merges = _merges(tokenizer)

    def add(writer: Any, vocab_size: int) -> None:
        if len(tokenizer) > vocab_size:
            raise InvalidInputError(
                f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab_size}"
            )
        tokens, types = [], []
        for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            if i in added:
                token = added[i].content
                types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
            else:
                types.append(gguf.TokenType.NORMAL)
            tokens.append(token)
        for i in range(len(tokenizer), vocab_size):  # embedding rows beyond the tokenizer (padding to a multiple)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        for name, add_id in (
            ("bos", writer.add_bos_token_id),
            ("eos", writer.add_eos_token_id),
            ("unk", writer.add_unk_token_id),
            ("pad", writer.add_pad_token_id),
        ):
            token_id = getattr(tokenizer, f"{name}_token_id", None)
            if token_id is not None:
                add_id(int(token_id))
        # whether encoding adds BOS / EOS, as the tokenizer actually does it (a flag or a post-processor)
        marked = tokenizer("a")["input_ids"]
        writer.add_add_bos_token(tokenizer.bos_token_id is not None and marked[:1] == [tokenizer.bos_token_id])
        writer.add_add_eos_token(
            tokenizer.eos_token_id is not None and len(marked) > 1 and marked[-1:] == [tokenizer.eos_token_id]
        )
        writer.add_add_space_prefix(False)
        if getattr(tokenizer, "chat_template", None):
            writer.add_chat_template(tokenizer.chat_template)

    return add
