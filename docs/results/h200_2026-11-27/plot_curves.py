"""Draws curves.png from the two fairseq training logs beside this file (RESULTS.md, H200 run of 2026-11-27)."""
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def series(log, pattern):
    return [(int(u), float(v)) for v, u in re.findall(pattern, (HERE / log).read_text())]


fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for axis, (log, name, metric) in zip(axes, [("hmlm_small_train.log", "hmlm_small (headless)", "CWT loss"),
                                            ("mlm_small_train.log", "mlm_small (vanilla)", "cross-entropy")]):
    train = series(log, r"train_inner.*? loss=([\d.]+).*?num_updates=(\d+)")
    valid = series(log, r"valid on 'valid' subset \| loss ([\d.]+).*?num_updates (\d+)")
    axis.plot(*zip(*train), marker=".", label="train (per 50 updates)")
    axis.plot(*zip(*valid), marker="o", label="valid (end of epoch)")
    axis.set_title(f"{name}, fp16, H200")
    axis.set_xlabel("updates (64 x 128 tokens each; same batches for both)")
    axis.set_ylabel(f"{metric} (bits)")
    axis.legend()
fig.suptitle("BERT-small twins on the SOTU corpus, 1,000 updates each (6.67M tokens): objectives differ, compare shapes only")
fig.tight_layout()
fig.savefig(HERE / "curves.png", dpi=100)
