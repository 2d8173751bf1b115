"""The paper's experiments, beside the package and calling it as a user would; one folder per study, each run
as ``python -m studies.<name>`` (docs/reproduce.md). :mod:`.training_runs` launches ``fairseq-hydra-train``
and reads its log for all of them; :mod:`.figures` draws their plots.
"""
