"""Downstream scores along pretraining (paper Figs.3-5 and 7): :mod:`.evaluate` scores every checkpoint of
some runs (``python -m studies.along_training``), :mod:`.batch_size_sweep` trains the decoders at several batch
sizes and scores them the same way (``python -m studies.along_training.batch_size_sweep``), :mod:`.report`
draws the figure."""
