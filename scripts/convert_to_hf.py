#!/usr/bin/env python
"""Export a fairseq-headless checkpoint to a Hugging Face folder, and prove both compute the same numbers.

    python scripts/convert_to_hf.py --checkpoint CKPT --output DIR [--data DATA_DIR] [--tokenizer FILE...] [--force]

| fairseq model                                           | Hugging Face class                   |
| roberta / headless_roberta (base, small, multilingual, tiny) | RobertaForMaskedLM (vanilla: its trained head) / HeadlessRobertaForMaskedLM (headless: e^T; model type headless_roberta, load with trust_remote_code=True) |
| transformer_lm shapes: gpt2_*, headless_gpt2_*, headless_transformer_lm | GPT2LMHeadModel (headless: head = e^T, tied to wte) |
| GPT-NeoX: pythia_*, headless_pythia_*                   | GPTNeoXForCausalLM (headless: head = e^T, tied to embed_in) |

The export is fairseq_headless/export/ (convert.py: read, map, save, reload, compare): weights
mapped through one key table per family (weights.py), the data folder's tokenizer rebuilt with
fairseq's ids (tokenizer.py), then the saved folder is reloaded with the Auto classes and compared
with the fairseq model (fp32, max abs difference <= 1e-4). The tokenizer comes from the
checkpoint's data folder (``task.data``, its first shard if a colon list, or ``--data``;
``--tokenizer`` for a folder binarized by fairseq-preprocess). Bad input ends with one ``error:``
line and exit code 2; a failed parity check with exit code 1; either way nothing is left behind.
See docs/export.md. The options are fairseq_headless/export/cli.py's; this file is only its
entry point.
"""
import logging
import sys

logging.getLogger("fairseq").setLevel(logging.WARNING)  # importing the package imports fairseq; stderr is for errors
from fairseq_headless.cli import run  # noqa: E402
from fairseq_headless.export.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
