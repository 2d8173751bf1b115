"""sweep.json, sweep.md and sweep.png (Fig.6: (a) the GLUE average and (b) the training throughput against the
dictionary rows, one line per model)."""
from __future__ import annotations

import logging
from pathlib import Path

from tabulate import tabulate

from fairseq_headless.evaluation.results import best_epoch_of
from fairseq_headless.files import write_json_atomic, write_text_atomic
from studies import figures
from .sweep import MODELS, run_overrides

logger = logging.getLogger(__name__)


def render_markdown(summary: dict) -> str:
    tasks = summary["glue_tasks"] if summary["glue"] else []
    header = ["vocab (requested)", "tokenizer tokens", "dictionary rows", "model", "parameters", "tokens/s",
              "updates/s", *tasks, *(["GLUE avg."] if tasks else [])]
    rows = []
    for entry in summary["sizes"]:
        for m in MODELS:
            r = entry["models"][m]
            rows.append([str(entry["requested"]), f"{entry['tokenizer_vocab']:,}", f"{entry['dictionary_rows']:,}",
                         f"{m} ({r['config']})", "?" if r["params"] is None else f"{r['params']:,}",
                         f"{r['tokens_per_s']:.0f}", f"{r['updates_per_s']:.2f}",
                         *([f"{r['glue']['tasks'][t]:.2f}" for t in tasks] + [f"{r['glue']['average']:.2f}"]
                           if tasks else [])])
    notes = [
        "tokens/s, updates/s: mean of fairseq's `wps` / `ups` over the `train_inner` log records, the first "
        "record of every launch left out (warm-up).",
        "dictionary rows: fairseq's dictionary (4 specials + tokenizer tokens + padding); the masked LM's "
        "embedding matrix has one more row (<mask>).",
    ]
    if tasks:
        notes.append(f"GLUE dev x 100, {summary['glue_settings']['seeds']} seed(s), each "
                     f"{best_epoch_of(summary['glue_settings']['epochs'])}; GLUE avg. = mean over {', '.join(tasks)} "
                     "(Tab.1 without RTE, MRPC, CoLA as §6 when the default tasks), per seed, then over seeds.")
    table = tabulate(rows, header, tablefmt="github", disable_numparse=True,
                     colalign=["left"] * 4 + ["right"] * (len(header) - 4))
    return (f"# Vocabulary-size sweep (paper §6, Fig.6): {summary['configs']['headless']} vs "
            f"{summary['configs']['vanilla']}\n\n{table}\n\n" + "".join(f"- {n}\n" for n in notes))


def plot(summary: dict, path: Path) -> None:
    fig, axes = figures.grid(1, 2, 11, 4)
    x = [e["dictionary_rows"] for e in summary["sizes"]]
    colors = {f"{m} ({summary['configs'][m]})": {"color": c} for m, c in zip(MODELS, ("tab:green", "tab:blue"))}

    def series(key):
        return {f"{m} ({summary['configs'][m]})": (x, [key(e["models"][m]) for e in summary["sizes"]]) for m in MODELS}

    glue_label = "GLUE dev average (" + ", ".join(summary["glue_tasks"]) + ")"
    figures.lines(axes[0][0], series(lambda r: r["glue"]["average"]) if summary["glue"] else {},
                  "vocabulary size (dictionary rows)", glue_label if summary["glue"] else "",
                  "(a) GLUE average" + ("" if summary["glue"] else " (not evaluated: --no-glue)"), styles=colors)
    figures.lines(axes[0][1], series(lambda r: r["tokens_per_s"]), "vocabulary size (dictionary rows)",
                  "tokens / s (fairseq wps)", "(b) training throughput", styles=colors)
    figures.save(fig, path)


def write_outputs(sweep, sizes: list) -> None:
    a = sweep.args
    summary = {
        "paper": "Headless Language Models, §6 'Token vocabulary', Fig.6, App. D.4",
        "configs": a.configs, "tokenizer_type": a.tokenizer_type, "corpus": a.corpus,
        "max_update": a.max_update, "train_overrides": run_overrides(a), "glue": not a.no_glue,
        "glue_tasks": a.task_names, "glue_settings": {"seeds": a.glue_seeds, "epochs": a.glue_epochs,
                                                      "args": a.glue_extra,
                                                      "data": str(a.glue_data) if a.glue_data else "hub"},
        "sizes": [sweep.results(size) for size in sizes],
    }
    write_json_atomic(a.output / "sweep.json", summary)
    write_text_atomic(a.output / "sweep.md", render_markdown(summary))
    plot(summary, a.output / "sweep.png")
    print("\n" + render_markdown(summary), flush=True)
    logger.info(f"written: {a.output / 'sweep.json'}, sweep.md, sweep.png")
