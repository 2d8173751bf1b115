"""Speed and memory of headless against vanilla training (paper §3.4, Fig.2, Fig.6b, Tab.6), and of the data stage.

``speed`` runs ``steps`` (training steps through fairseq's Trainer), ``loss`` (the CWT loss against
cross-entropy and their floors) and ``curves`` (dense vs sparse embedding update on a corpus); ``data``
measures the data preparation; ``lazy_vs_dense`` the sparse update's effect on the embeddings;
``machine`` describes the machine and measures peak memory; ``report`` writes tables and plots.
"""
