"""`make demo`: raw text to a headless and a vanilla encoder, trained at equal tokens and compared (paper Tab.1).

:mod:`.twins` pretrains, scores and exports the twins; :mod:`.downstream` fine-tunes the exports on a small
task built from the default corpus (SOTU-era). Run as ``python -m studies.demo`` (docs/demo.md).
"""
