"""The figure of the evaluation along training (paper Figs.3-5 and 7): one line per run ("NAME + FT" for a
fine-tuned headless decoder), x = tokens seen and x = training hours; its JSON, markdown and PNG."""
from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from fairseq_headless.files import write_json_atomic, write_text_atomic
from studies import figures

METRICS = {  # kind -> [(key, axis label, log scale)]
    "lambada": [("accuracy", "LAMBADA accuracy (%)", False), ("perplexity", "LAMBADA perplexity", True)],
    "glue": [("glue_average", "GLUE average", False)],
}


def series_of(records_by_run: dict) -> dict:
    """{label: [point]}: one line per run, and "NAME + FT" for fine-tuned headless decoders.

    A point = updates, tokens, hours (and device hours) and the scores; an FT point sits at
    the pretraining checkpoint's tokens plus the fine-tuning's own (Fig.4), and at the fine-tuned
    checkpoint's hours: fairseq restores ``previous_training_time`` also with
    ``finetune_from_model`` (only the meters, optimizer and data iterator are reset), so that
    clock already includes the pretraining's. Device hours: the pretraining's, plus the
    fine-tuning's own seconds on its own devices.
    """
    series = {}
    for name, records in records_by_run.items():
        for record in records:
            p = record["progress"]
            scores = {k: v * 100 if k == "accuracy" else v for k, v in record["scores"].items()}
            series.setdefault(name, []).append({
                "updates": p["updates"], "tokens": p["tokens"], "hours": p["hours"], "device_hours": p["device_hours"],
                "log_wall_seconds": p["log_wall_seconds"], "checkpoint": p["checkpoint"], **scores})
            if "finetuned" in record:
                f = record["finetuned"]["progress"]
                ft_scores = {k: v * 100 if k == "accuracy" else v for k, v in record["finetuned"]["scores"].items()}
                series.setdefault(f"{name} + FT", []).append({
                    "updates": p["updates"], "finetune_updates": f["updates"], "tokens": p["tokens"] + f["tokens"],
                    "hours": f["hours"],
                    "device_hours": p["device_hours"] + (f["seconds"] - p["seconds"]) / 3600 * f["world_size"],
                    "checkpoint": p["checkpoint"], **ft_scores})
    return series


def plot(series: dict, kind: str, path: Path, title: str) -> None:
    """Rows: the metrics; columns: x = tokens seen, x = training hours. One line per series."""
    metrics = [m for m in METRICS[kind] if any(m[0] in p for points in series.values() for p in points)]
    fig, axes = figures.grid(len(metrics), 2, 11, 3.6 * len(metrics))
    for row, (key, label, log_scale) in enumerate(metrics):
        for col, (x, xlabel) in enumerate((("tokens", "tokens seen"), ("hours", "training hours"))):
            figures.lines(axes[row][col], {name: ([p[x] for p in points], [p[key] for p in points])
                                           for name, points in series.items()}, xlabel, label, log_y=log_scale)
            axes[row][col].ticklabel_format(axis="x", style="sci", scilimits=(-2, 4))
    fig.suptitle(title)
    figures.save(fig, path, dpi=110)


def markdown(series: dict, kind: str, title: str) -> str:
    keys = [m[0] for m in METRICS[kind]]
    parts = [f"# {title}\n"]
    for name, points in series.items():
        shown = [k for k in keys if any(k in p for p in points)]
        rows = [[p["updates"], f"{p['tokens']:,}", f"{p['hours']:.4f}", *(f"{p[k]:.2f}" for k in shown)]
                for p in points]
        parts.append(f"## {name}\n\n" + tabulate(rows, ["updates", "tokens", "hours", *shown], tablefmt="github",
                                                  disable_numparse=True, colalign=["right"] * (3 + len(shown))) + "\n")
    return "\n".join(parts) + "\n"


def write_summary(output: Path, kind: str, series: dict, runs: dict, stem: str = "along_training",
                  title: str | None = None) -> Path:
    title = title or {"lambada": "LAMBADA along pretraining (paper Figs.4, 7)",
                      "glue": "GLUE average along pretraining (paper Fig.3)"}[kind]
    write_json_atomic(output / f"{stem}.json", {
        "kind": kind, "title": title, "runs": {n: str(f) for n, f in runs.items()}, "series": series,
        "units": {"accuracy": "% of passages", "glue_average": "score x 100", "hours": "wall-clock training hours "
                  "(fairseq cumulative_training_time)", "device_hours": "hours x distributed_world_size",
                  "tokens": "sum of ntokens over updates (fairseq wpb meter; extrapolated from its counted updates "
                  "where a point's tokens_estimated)"}})
    write_text_atomic(output / f"{stem}.md", markdown(series, kind, title))
    png = output / f"{stem}.png"
    plot(series, kind, png, title)
    return png
