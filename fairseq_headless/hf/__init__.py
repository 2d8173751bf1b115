"""The Hugging Face engine: headless pretraining of any ``transformers`` model through its ``Trainer``.

:mod:`.objective` holds the losses (CWT and its vanilla twin) and the masking; nothing here imports fairseq.
"""
