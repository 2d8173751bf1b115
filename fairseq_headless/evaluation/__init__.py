"""Downstream evaluation of exported encoders (paper §4.1 Tab.1-2, §5 Tab.5, App. E).

Fine-tunes any Hugging Face RoBERTa-style encoder folder (a headless export is a
``headless_roberta`` model, loaded with ``trust_remote_code=True``, a vanilla one a
``RobertaForMaskedLM``; both get RoBERTa's own task heads) on GLUE, SuperGLUE (BoolQ, CB,
COPA, WiC) and XNLI with the protocol of App. E, and writes the paper's tables.

Nothing here imports fairseq: the modules run on Hugging Face models only.

    tasks.py          what each task is: files, columns, labels, metrics (the registry)
    readers.py        TSV / jsonl readers that validate what they read
    task_data.py      rows -> examples (local files in the benchmarks' own layouts, or the hub)
    encoding.py       examples -> token ids, and the batch collators
    model_loading.py  encoder folder -> model with a new task head, checked
    balanced_loss.py  the balanced cross-entropy of App. E.1
    metrics.py        accuracy, F1, Matthews, Spearman/Pearson (scikit-learn / scipy)
    finetune.py       one fine-tuning run (transformers Trainer) with per-epoch evaluation
    results.py        seeds aggregation, atomic JSON, markdown tables, PNG
    suite.py          a suite run: models x tasks x seeds, resume and --force, the tables
    cli.py            the command lines of scripts/finetune_{glue,superglue,xnli}.py
    zeroshot.py       Tab.4's zero-shot suite of causal models: lm-eval's own tasks on local files
    zeroshot_compare.py  one-tailed t-tests (Tab.4's daggers), the table and its PNG
    zeroshot_cli.py   the command lines of scripts/eval_zeroshot.py and compare_zeroshot.py
    zeroshot_tasks/   one YAML per zero-shot task (derived from lm-eval's, by path)
"""
