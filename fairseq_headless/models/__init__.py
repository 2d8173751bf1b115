"""Architectures with no output projection, and their vanilla twins (paper App. D).

Each architecture is one entry of :data:`.shapes.SHAPES`; the family modules register it when the
plugin (:mod:`fairseq_headless.plugin`) imports them. The package itself imports nothing, so that the
shape table is read without fairseq (the export's tokenizer, the Hugging Face side).
"""
