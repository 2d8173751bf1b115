"""Results: atomic JSON, mean and standard deviation over seeds, the paper's tables, a PNG.

Scores are fractions, printed x 100. A cell is ``mean ± std`` over seeds (ddof = 1), each at its best
epoch; one seed is its value alone ("± 0.00" would claim no spread). The average column follows Tab.1/2/5:
per seed the mean over the columns, then mean ± std of those; a row missing a column gets none."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from ..files import save_figure_atomic

METRIC_LABELS = {"accuracy": "acc.", "f1": "F1", "matthews": "MCC", "spearman": "Spearman", "pearson": "Pearson"}


def best_epoch_of(epochs: int) -> str:
    """How a table note names the epoch its scores come from."""
    return f"at its best of {epochs} epochs" if epochs != 1 else "after its one epoch"


def mean_std(values) -> tuple:
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def cell(per_seed: Optional[dict]) -> str:
    """``{seed: score}`` -> '85.87 ± 0.40' (x 100); one seed -> '85.87'."""
    if not per_seed:
        return "—"
    mean, std = mean_std(per_seed.values())
    return f"{100 * mean:.2f}" if len(per_seed) == 1 else f"{100 * mean:.2f} ± {100 * std:.2f}"


def row_average(columns: dict, avg_columns: list, main_metric: dict) -> Optional[dict]:
    """{seed: mean over ``avg_columns`` of their main metric}, over the seeds every column has."""
    if not avg_columns or any(c not in columns for c in avg_columns):
        return None
    seeds = set.intersection(*(set(columns[c][main_metric[c]]) for c in avg_columns))
    return {s: sum(columns[c][main_metric[c]][s] for c in avg_columns) / len(avg_columns) for s in sorted(seeds)}


def table(header: list, rows: list) -> str:
    """A markdown table: the first column left-aligned, the others (scores) right-aligned; cells as given."""
    from tabulate import tabulate
    return tabulate(rows, headers=header, tablefmt="pipe", disable_numparse=True,
                    colalign=("left",) + ("right",) * (len(header) - 1)) + "\n"


def markdown_table(rows: list, columns: list, avg_columns: list, main_metric: dict, first_header: str = "model",
                   avg_header: str = "Avg.") -> str:
    """One row per model: ``rows`` = [(name, {column: {metric: {seed: value}}})]; the average column comes
    after the ``avg_columns`` (the columns not averaged, e.g. RTE, follow it)."""
    shown = [c for c in columns if any(c in r for _, r in rows)]
    averaged = [c for c in shown if c in avg_columns]
    rest = [c for c in shown if c not in avg_columns]
    header = [first_header] + averaged + ([avg_header] if averaged else []) + rest
    body = []
    for name, data in rows:
        cells = [cell(data.get(c, {}).get(main_metric[c])) for c in averaged]
        if averaged:
            cells.append(cell(row_average(data, averaged, main_metric)))
        body.append([name, *cells, *(cell(data.get(c, {}).get(main_metric[c])) for c in rest)])
    return table(header, body)


def secondary_table(rows: list, columns: list, main_metric: dict, first_header: str = "model") -> str:
    """The metrics that are not the table's (MRPC/QQP F1, STS-B Pearson); '' if there are none."""
    pairs = []
    for c in columns:
        metrics = sorted({m for _, r in rows for m in r.get(c, {}) if m != main_metric[c]})
        pairs += [(c, m) for m in metrics]
    if not pairs:
        return ""
    header = [first_header] + [f"{c} {METRIC_LABELS.get(m, m)}" for c, m in pairs]
    return table(header, [[name, *(cell(data.get(c, {}).get(m)) for c, m in pairs)] for name, data in rows])


def bar_chart(path: Path, sections: list, title: str) -> None:
    """A PNG of grouped bars (one group per column, one bar per model, seed std as error bars).

    ``sections`` = [(subtitle or "", rows, columns, main_metric)], one panel each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(sections), 1, figsize=(max(6, 1.4 * max(len(s[2]) for s in sections) + 2),
                                                       3.2 * len(sections)), squeeze=False)
    for ax, (subtitle, rows, columns, main_metric) in zip(axes[:, 0], sections):
        shown = [c for c in columns if any(c in r for _, r in rows)]
        width = 0.8 / max(1, len(rows))
        for i, (name, data) in enumerate(rows):
            per_seed = [data[c][main_metric[c]] if c in data else {} for c in shown]
            stats = [mean_std(scores.values()) if scores else (math.nan, 0.0) for scores in per_seed]
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(shown))]
            errors = [100 * s if len(scores) > 1 else math.nan for (_, s), scores in zip(stats, per_seed)]
            bars = ax.bar(xs, [100 * m for m, _ in stats], width, yerr=errors, label=name, capsize=3)
            ax.bar_label(bars, fmt="%.1f", fontsize="x-small", label_type="center")
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([f"{c}\n({METRIC_LABELS.get(main_metric[c], main_metric[c])})" for c in shown])
        ax.set_ylabel("score x 100")
        if subtitle:
            ax.set_title(subtitle)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure_atomic(fig, path)
