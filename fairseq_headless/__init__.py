"""fairseq-headless: headless language models with Contrastive Weight Tying (Godey, de la Clergerie,
Sagot, ICLR 2024).

The loss, :func:`cwt_loss`, is a pure function of tensors (:mod:`.cwt`); the fairseq plugin is
:mod:`.plugin`, registered once fairseq is loaded, in either import order. Importing the package imports
neither fairseq nor torch. Why and how: docs/design.md#__init__py-and-pluginpy."""

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
                    # fairseq's import calls logging.basicConfig(level=DEBUG): leave logging as it was.
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
