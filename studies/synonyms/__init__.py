"""Are synonyms' input embeddings more alike in a headless model than in a vanilla one? (paper App. A, Fig.8)

``python -m studies.synonyms`` (docs/analysis.md): :mod:`.wordnet` reads synonym pairs from a local WordNet,
:mod:`.embeddings` a model's input embeddings and single-token words, :mod:`.synonyms` compares the cosines,
:mod:`.report` writes the JSON, markdown, PNG and pairs; :mod:`.cli` is the command line.
"""
