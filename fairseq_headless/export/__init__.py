"""Export: a fairseq-headless checkpoint -> a Hugging Face folder that computes the same numbers (docs/export.md).

:func:`convert` (convert.py) reads, maps through weights.py's key table of the model's family, saves, reloads
and checks parity; tokenizer.py rebuilds the data folder's tokenizer with fairseq's ids and checks it
(ParityError, exit 1); modeling_headless_roberta.py is the ``headless_roberta`` model type copied into headless
encoder exports; cli.py is scripts/convert_to_hf.py."""
from .convert import convert
from .tokenizer import ParityError

__all__ = ["convert", "ParityError"]
