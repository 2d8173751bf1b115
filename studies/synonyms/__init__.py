"""Analyses of trained models beyond the benchmarks (paper App. A).

    errors.py      AnalysisInputError: bad input the user can fix (scripts: one line, exit 2)
    wordnet.py     synonym pairs from a local WordNet database (nltk's reader, never a download)
    embeddings.py  a model's input embedding matrix and word -> single token id, from a fairseq
                   checkpoint (+ its data folder's tokenizer) or a Hugging Face folder
    synonyms.py    App. A / Fig.8: cosine similarity of synonym pairs' input embeddings,
                   headless against vanilla, with a random-pair control
    report.py      the JSON, markdown and PNG of that analysis
    cli.py         the command line of studies/synonyms/
"""
