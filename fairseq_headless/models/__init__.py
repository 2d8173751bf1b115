"""Architectures with no output projection, and their vanilla twins (paper App. D)."""

from . import (  # noqa: F401
    causal_finetune,
    gpt2_shapes,
    gpt_neox,
    headless_roberta,
    headless_transformer_lm,
    roberta_shapes,
)
