"""The fairseq plugin: everything that registers with fairseq or corrects it.

* :mod:`.criterions`: ``headless_masked_lm`` and ``headless_language_modeling`` (CWT, §3);
* :mod:`.models`: the headless architectures and their vanilla twins (App. D);
* :mod:`.lazy_adam`: the ``lazy_adam`` optimizer of ``model.sparse_embedding_update=true``;
* :mod:`.data_folder_bpe`: the ``data_folder`` BPE, the data folder's tokenizer for fairseq's hub and tools;
* :mod:`.fairseq_patches`: corrections of fairseq's own bugs.

Importing this module imports fairseq; :mod:`fairseq_headless` imports it once fairseq is loaded.
"""

import warnings

from . import criterions, data_folder_bpe, fairseq_patches, lazy_adam  # noqa: F401
from .models import causal_finetune, gpt_neox, headless_roberta, headless_transformer_lm, shapes  # noqa: F401

# Warnings of fairseq's own code under torch 2.x that no user can act on; only these exact messages, only
# from the modules that raise them (docs/design.md#__init__py-and-pluginpy).
warnings.filterwarnings("ignore", message=r"'pin_memory' argument is set as true but no accelerator is found",
                        category=UserWarning, module=r"torch\.utils\.data\.dataloader")
warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated",
                        category=FutureWarning, module=r"fairseq\.")
warnings.filterwarnings("ignore", message=r"Support for mismatched key_padding_mask and attn_mask is deprecated",
                        category=UserWarning, module=r"torch\.nn\.functional")
