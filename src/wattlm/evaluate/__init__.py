"""QUALITY & SPEED: perplexity, KL to a baseline, prefill/decode timing."""
