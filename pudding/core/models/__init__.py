"""The base LLM: loading (hub id, folder, GGUF, ``default``), dtype choice, family adapters, block omission."""

DEFAULT_CACHE_DIR = "checkpoints/base_models"
"""Where de-quantised GGUF weights are cached unless another folder is given."""
