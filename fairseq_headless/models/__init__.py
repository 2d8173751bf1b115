"""Architectures with no output projection, and their vanilla twins (paper App. D)."""

from . import gpt2_shapes, headless_roberta, headless_transformer_lm, roberta_shapes  # noqa: F401
