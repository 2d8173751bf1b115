"""The Hugging Face engine: any transformers model pretrained headless (CWT) or vanilla by HF's Trainer,
on the data folders of scripts/prepare_data.py (docs/hf.md). Imports no fairseq.

    data.py       a data folder read without fairseq, packed as the fairseq configs pack it; the id map
    tokenizer.py  the folder's tokenizer as a transformers fast tokenizer, checked against the folder
    shapes.py     built-in shapes, --model resolved to a model, the head set to e^T
    objective.py  the losses (CWT on the base model's hidden states, or the model's own head) and masking
    pretrain.py   the command line of scripts/pretrain_hf.py: the Trainer with the objective's loss
"""
