"""Reading a fairseq checkpoint as data (its config, weights, training state), whichever fairseq CLI wrote it.

Used by the analyses of trained checkpoints (the x axes of Figs.3-5 and 7 in
:mod:`fairseq_headless.training_progress`, App. A's embeddings in :mod:`fairseq_headless.analysis`).
``torch.load`` runs with ``weights_only`` (tensors and plain containers, no pickled code).

fairseq-hydra-train saves every ``cfg`` section as a plain dict. fairseq-train (argparse) saves the
sections of components registered without a dataclass -- fairseq's RoBERTa and the plugin's
``headless_roberta`` models among them -- as the command line's ``argparse.Namespace``
(fairseq/dataclass/utils.py, ``convert_namespace_to_omegaconf``): a class that weights_only loading
refuses unless it is allowed, and whose fields are attributes, not items.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
from unittest import mock

LEGACY_CONFIG_CLASSES = [argparse.Namespace]


@contextlib.contextmanager
def weights_only_loading():
    """Every ``torch.load`` inside (fairseq's loaders included) runs weights_only, with argparse.Namespace allowed."""
    import torch

    safe_load = functools.partial(torch.load, weights_only=True)
    with mock.patch.object(torch, "load", safe_load), torch.serialization.safe_globals(LEGACY_CONFIG_CLASSES):
        yield


def cfg_field(section, key: str):
    """``key`` of one section of a checkpoint's cfg (a dict, a DictConfig or a fairseq-train Namespace).

    Raises KeyError when the section lacks it, whatever its type.
    """
    if isinstance(section, argparse.Namespace):
        try:
            return getattr(section, key)
        except AttributeError:
            raise KeyError(key) from None
    return section[key]
