"""Orchestration of the paper's pretraining sweeps (§6: vocabulary size, Fig.6; batch size, Fig.7).

Nothing here imports fairseq: the runs are ``fairseq-hydra-train`` subprocesses, and what is
measured comes from fairseq's own json training log.

* :mod:`.training_runs`: launch a pretraining run, stream its log to a file with progress lines,
  read the log (train_inner / train / valid records, parameter count) and its throughput.
* :mod:`.stages`: resumable stages, each leaving a marker JSON with the settings it was run with.
"""
