"""Architectures with no output projection, and their vanilla twins (paper App. D).

Each architecture is one entry of :data:`.shapes.SHAPES`; the family modules register it.
"""

from . import (  # noqa: F401
    causal_finetune,
    gpt_neox,
    headless_roberta,
    headless_transformer_lm,
    shapes,
)
