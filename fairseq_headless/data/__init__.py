"""The data stage: raw text -> a fairseq data folder (scripts/prepare_data.py), and reading one.

    sources.py, splits.py, sampling.py   records, their split and shard, multilingual and tokenizer sampling
    tokenizer.py, binarize.py            text -> ids -> fairseq's mmap files and dict.txt (id + 4)
    prepare.py                           the passes, workers, shards, resuming: prepare_data(Options)
    interrupt.py, cli.py                 signals; the command line's options -> prepare.Options
    folder.py                            reading a data folder (the one place later stages tokenize with)
    fetch.py                             the demo corpus from the npm registry
How they work: docs/data.md, "How the code works"."""
