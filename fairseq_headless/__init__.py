"""fairseq-headless: headless language models with Contrastive Weight Tying.

Godey, de la Clergerie, Sagot. "Headless Language Models: Learning without
Predicting with Contrastive Weight Tying", ICLR 2024.

The loss itself, :func:`cwt_loss`, is a pure function of tensors in :mod:`fairseq_headless.cwt`.
The fairseq plugin (the criterions, architectures and the ``lazy_adam`` optimizer, and the
corrections of fairseq's own bugs) is :mod:`fairseq_headless.plugin`. It is registered only
together with fairseq, so that the Hugging Face side (``fairseq_headless.evaluation``,
``fairseq_headless.analysis``, ``fairseq_headless.cli``) never imports fairseq (or torch, for the
command-line convention):

* imported after fairseq (``--user-dir`` / ``common.user_dir``: fairseq's ``import_user_module``
  imports this package once fairseq is loaded), it registers the plugin at once;
* imported before fairseq, it registers the plugin when fairseq is first imported. fairseq's
  ``import_user_module`` does not import a package twice, so without this a process that had
  imported, say, ``fairseq_headless.evaluation`` first would train without the plugin.

Code that needs the registrations says so: ``import fairseq_headless.plugin``. It must when its
first import of fairseq goes through one of the plugin's own modules (``from
fairseq_headless.sparse_embedding import ...`` in a fresh process): the hook does not register the
plugin half-way through the import of one of its modules.
"""

import importlib.util
import logging
import sys

__version__ = "0.1.0"


def _initializing_plugin_module() -> bool:
    """Whether a module of this package is half-way through its own import (and imports fairseq first):
    the plugin imports it too, and would find its names missing."""
    return any(name.startswith(f"{__name__}.") and getattr(getattr(module, "__spec__", None), "_initializing", False)
               for name, module in list(sys.modules.items()))


def _register_when_fairseq_is_imported() -> None:
    """Import the plugin right after fairseq's own ``__init__`` has run (an import hook, gone once used)."""

    class FairseqLoaded:
        searching = False

        def find_spec(self, name, path=None, target=None):
            if name != "fairseq" or self.searching:
                return None
            self.searching = True  # the real spec, from the finders after this one
            try:
                spec = importlib.util.find_spec(name)
            finally:
                self.searching = False
            if spec is not None and spec.loader is not None:
                load_fairseq = spec.loader.exec_module  # this spec's own loader, no other module's

                def exec_module(module):
                    if self in sys.meta_path:
                        sys.meta_path.remove(self)
                    # fairseq's wav2vec2_classification calls logging.basicConfig(level=DEBUG) when fairseq
                    # is imported (its text_to_speech tasks basicConfig(INFO) after it): a library
                    # configuring the process's logging, after which every library's DEBUG lines
                    # (hydra's, matplotlib's font search) print. Importing fairseq leaves logging as it was
                    # (guarded by tests/test_fairseq_patches.py). fairseq-hydra-train imports fairseq before
                    # any code of this package can run: there hydra's own logging setup replaces it.
                    root = logging.getLogger()
                    level, handlers = root.level, list(root.handlers)
                    load_fairseq(module)
                    root.setLevel(level)
                    root.handlers[:] = handlers
                    if not _initializing_plugin_module():
                        importlib.import_module(f"{__name__}.plugin")

                spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, FairseqLoaded())


if "fairseq" in sys.modules:
    from . import plugin  # noqa: F401
else:
    _register_when_fairseq_is_imported()


def __getattr__(name):
    # The loss without importing torch at package import (the command lines' --help stays immediate).
    if name in ("cwt_loss", "CWTOutput"):
        from . import cwt

        return getattr(cwt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
