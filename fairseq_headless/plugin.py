"""The fairseq plugin: everything that registers with fairseq or corrects it.

* :mod:`.criterions`: ``headless_masked_lm`` and ``headless_language_modeling`` (CWT, §3);
* :mod:`.models`: the headless architectures and their vanilla twins (App. D);
* :mod:`.lazy_adam`: the ``lazy_adam`` optimizer of ``model.sparse_embedding_update=true``;
* :mod:`.data_folder_bpe`: the ``data_folder`` BPE, the data folder's tokenizer for fairseq's hub and tools;
* :mod:`.fairseq_patches`: corrections of fairseq's own bugs, guarded by tests/test_fairseq_patches.py.

Importing this module imports fairseq. :mod:`fairseq_headless` imports it as soon as fairseq is
loaded (``--user-dir``); tests and scripts that need the registrations import it explicitly.
"""

from . import criterions, data_folder_bpe, fairseq_patches, lazy_adam, models  # noqa: F401
