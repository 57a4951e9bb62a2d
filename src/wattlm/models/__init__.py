"""LOAD: models (hub id, local directory, GGUF), the embedded defaults, and corpora."""
