"""Speed and memory of headless against vanilla training (paper §3.4, Fig.2, Fig.6b, Tab.6).

``steps``: training steps through fairseq's ``Trainer`` (vanilla, headless, body with a free loss);
``loss``: the CWT loss against cross-entropy and their matrix-product floors; ``curves``: dense vs
sparse embedding update on a corpus; ``machine``: machine description, peak memory, isolation;
``report``: tables and plots; ``speed``: the presets and the run of ``studies/benchmarks/speed.py``.
``host_memory``: host RAM of a rank's training split per block (``scripts/measure_train_memory.py``);
``data``: the data stage (``studies/benchmarks/data.py``).
"""
