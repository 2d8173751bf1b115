#!/usr/bin/env python
"""Pretrain a Hugging Face transformers model, headless (CWT) or vanilla, on a prepare_data.py folder.

    python scripts/pretrain_hf.py --model pythia_70m --data DATA --task clm --objective headless \\
        --output_dir runs/hpythia [any TrainingArguments flag: --max_steps, --learning_rate, --bf16, ...]

``--model``: a built-in shape (bert_small, bert_base, pythia_70m, modernbert_base, smollm2_135m,
llama32_1b), a config.json or a folder holding one (built fresh), or a saved model folder (continued).
The data folder's tokenizer sets the vocabulary and is saved with the model; the final folder in
``--output_dir`` loads with AutoModelForMaskedLM / AutoModelForCausalLM and AutoTokenizer. A run resumes
from ``--output_dir``'s last checkpoint. torchrun and accelerate launch it as any Trainer script.
Causal fine-tuning of a headless decoder (paper §3.3): ``--objective vanilla --untie_head --model FOLDER``.
Bad input ends with one ``error:`` line and exit code 2. The command line is
fairseq_headless/hf/pretrain.py's; this file is only its entry point.
"""
import sys

from fairseq_headless.cli import run
from fairseq_headless.hf.pretrain import main

if __name__ == "__main__":
    sys.exit(run(main))
