"""Export: a fairseq-headless checkpoint -> a Hugging Face folder that computes the same numbers.

    weights.py    one key table per architecture family (RoBERTa, GPT-2, GPT-NeoX) and its config
    tokenizer.py  the data folder's tokenizer rebuilt with fairseq's ids, and its check (ParityError, exit 1)
    convert.py    read, map, save, reload, parity check, model card: :func:`convert`
    modeling_headless_roberta.py  the ``headless_roberta`` model type (e^T masked-LM scores, RoBERTa's
                  task heads), copied into every headless encoder export; torch and transformers only
    cli.py        the command line of scripts/convert_to_hf.py (its options, exit codes 2 and 1)

The command line is scripts/convert_to_hf.py (docs/export.md). Its modules import
neither torch nor fairseq at import time (but modeling_headless_roberta.py, which the package
itself imports only when it converts or builds such a model); :func:`convert` does.
"""
from .convert import convert
from .tokenizer import ParityError

__all__ = ["convert", "ParityError"]
