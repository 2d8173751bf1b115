"""Vocabulary-size sweep (paper §6 "Token vocabulary", Fig.6, App. D.4): for each size a tokenizer, the data,
the headless and vanilla BERT-small pretrainings, their exports and GLUE without RTE, MRPC and CoLA; then the
GLUE average and the throughput against the vocabulary size. ``python -m studies.vocab_sweep``
(docs/sweep_vocab.md): :mod:`.sweep` runs the resumable stages, :mod:`.report` writes sweep.{json,md,png}.
"""
