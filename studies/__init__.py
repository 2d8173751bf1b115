"""Training runs and the experiments built on them (paper §6: vocabulary size, Fig.6; batch size, Fig.7;
scores along pretraining, Figs.3-5; the demo; the GPU checks).

Nothing here imports fairseq at import time: the runs are ``fairseq-hydra-train`` subprocesses, and what is
measured comes from fairseq's own training log and checkpoints.

* :mod:`.training_runs`: the one launcher: start ``fairseq-hydra-train`` (or any command line, e.g. under
  torchrun), append its output to a log file, follow it with progress lines, time it out, its exit status.
* :mod:`.training_log`: the one reader of a training log (json or simple format): records, parameter count,
  fp16 overflow skips, throughput.
* :mod:`.along_training` (+ ``_report``), :mod:`.batch_size_sweep`, :mod:`.vocab_sweep` (+ ``_stages``,
  ``_report``), :mod:`.demo`, :mod:`.gpu_checks`: the code of the scripts of the same names.
* :mod:`.common_steps`: the export, LAMBADA and data-preparation steps several experiments take.
"""
