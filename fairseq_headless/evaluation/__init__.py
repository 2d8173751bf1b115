"""Downstream evaluation of exported models (paper §4.1 Tab.1-2, §4.2 Tab.4, §5 Tab.5, App. E); imports no fairseq.

Fine-tunes any Hugging Face RoBERTa-style encoder folder (headless exports are ``headless_roberta`` models,
vanilla ones ``RobertaForMaskedLM``; both get RoBERTa's own task heads) on GLUE, SuperGLUE (BoolQ, CB, COPA,
WiC) and XNLI with App. E's protocol, and writes the paper's tables; scores causal exports zero-shot (Tab.4).
One concept per module: tasks.py (the registry), readers.py and task_data.py (files -> examples),
encoding.py (-> token ids), model_loading.py (folder -> model with a new head), balanced_loss.py and
metrics.py, finetune.py (one run), suite.py and results.py (models x tasks x seeds, the tables), cli.py;
zeroshot.py, zeroshot_compare.py and zeroshot_cli.py (Tab.4), zeroshot_tasks/ (one YAML per task)."""
