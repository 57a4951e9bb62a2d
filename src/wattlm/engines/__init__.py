"""ENGINES: runtimes other than transformers. GGUF export (gguf_export, gguf_vocab) and llama.cpp
(llamacpp: quantize, load, score, prefill, decode) behind the calls the bench harness makes."""
