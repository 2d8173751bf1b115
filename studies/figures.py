"""The studies' figures: a grid of axes, one line (or bar) per series, saved atomically."""
from __future__ import annotations

from pathlib import Path


def grid(rows: int, cols: int, width: float, height: float):
    """(figure, 2-D array of axes), drawn off-screen."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False)


def lines(ax, series: dict, xlabel: str, ylabel: str, title: str = "", log_y: bool = False,
          styles: dict | None = None) -> None:
    """One line per ``{label: (xs, ys)}`` (``styles``: plot options by label); a label ending in " + FT" is dashed."""
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label, linestyle="--" if label.endswith(" + FT") else "-",
                **(styles or {}).get(label, {}))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small")


def save(fig, path: Path, dpi: int = 100) -> None:
    from fairseq_headless.files import save_figure_atomic

    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=dpi)
