"""fairseq-headless: headless language models with Contrastive Weight Tying.

Godey, de la Clergerie, Sagot. "Headless Language Models: Learning without
Predicting with Contrastive Weight Tying", ICLR 2024.

Importing this package (``--user-dir`` / ``common.user_dir``) registers the
criterions ``headless_masked_lm`` and ``headless_language_modeling`` and the
headless architectures with fairseq. The loss itself, :func:`cwt_loss`, is a
pure function of tensors in :mod:`fairseq_headless.cwt`. Small, guarded corrections
to fairseq (CPU DDP, atomic checkpoint copies, row-sparse embedding gradients, numpy-2
eos mode, the sparse all-reduce hook on its DDP, dummy batches) are applied on import:
see :mod:`fairseq_headless.fairseq_patches`.
"""

import importlib.util

from .cwt import CWTOutput, cwt_loss  # noqa: F401

# The fairseq plugin proper. Without fairseq (e.g. only evaluating exported Hugging
# Face models with fairseq_headless.evaluation), the loss and evaluation code still import.
if importlib.util.find_spec("fairseq") is not None:
    from . import criterions, fairseq_patches, models  # noqa: F401

__version__ = "0.1.0"
