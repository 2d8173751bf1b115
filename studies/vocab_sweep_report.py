"""The outputs of the vocabulary-size sweep (paper §6, Fig.6): sweep.json, sweep.md and sweep.png.

(a) the GLUE average and (b) the training throughput against the dictionary rows, one line per model.
"""
from __future__ import annotations

from pathlib import Path

from fairseq_headless.evaluation.results import best_epoch_of
from fairseq_headless.files import save_figure_atomic, write_json_atomic, write_text_atomic
from .vocab_sweep import MODELS, log, run_overrides


def render_markdown(summary: dict) -> str:
    tasks = summary["glue_tasks"] if summary["glue"] else []
    header = (["vocab (requested)", "tokenizer tokens", "dictionary rows", "model", "parameters", "tokens/s",
               "updates/s"] + tasks + (["GLUE avg."] if tasks else []))
    lines = [f"# Vocabulary-size sweep (paper §6, Fig.6): {summary['configs']['headless']} vs "
             f"{summary['configs']['vanilla']}\n",
             "| " + " | ".join(header) + " |", "|" + "---|" * 4 + "---:|" * (len(header) - 4)]
    for entry in summary["sizes"]:
        for m in MODELS:
            r = entry["models"][m]
            params = "?" if r["params"] is None else f"{r['params']:,}"
            cells = [str(entry["requested"]), f"{entry['tokenizer_vocab']:,}", f"{entry['dictionary_rows']:,}",
                     f"{m} ({r['config']})", params, f"{r['tokens_per_s']:.0f}", f"{r['updates_per_s']:.2f}"]
            if tasks:
                cells += [f"{r['glue']['tasks'][t]:.2f}" for t in tasks] + [f"{r['glue']['average']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
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
    return "\n".join(lines) + "\n\n" + "".join(f"- {n}\n" for n in notes)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"headless": "tab:green", "vanilla": "tab:blue"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = [e["dictionary_rows"] for e in summary["sizes"]]
    for m in MODELS:
        label = f"{m} ({summary['configs'][m]})"
        if summary["glue"]:
            axes[0].plot(x, [e["models"][m]["glue"]["average"] for e in summary["sizes"]], marker="o",
                         color=colors[m], label=label)
        axes[1].plot(x, [e["models"][m]["tokens_per_s"] for e in summary["sizes"]], marker="o",
                     color=colors[m], label=label)
    axes[0].set_title("(a) GLUE average" + ("" if summary["glue"] else " (not evaluated: --no-glue)"))
    axes[0].set_ylabel("GLUE dev average (" + ", ".join(summary["glue_tasks"]) + ")" if summary["glue"] else "")
    axes[1].set_title("(b) training throughput")
    axes[1].set_ylabel("tokens / s (fairseq wps)")
    for ax in axes:
        ax.set_xlabel("vocabulary size (dictionary rows)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)


def write_outputs(sweep, sizes: list) -> None:
    a = sweep.args
    summary = {
        "paper": "Headless Language Models, §6 'Token vocabulary', Fig.6, App. D.4",
        "configs": a.configs, "tokenizer_type": a.tokenizer_type, "corpus": a.corpus,
        "max_update": a.max_update, "train_overrides": run_overrides(a),
        "glue": not a.no_glue, "glue_tasks": a.task_names,
        "glue_settings": {"seeds": a.glue_seeds, "epochs": a.glue_epochs, "args": a.glue_extra,
                          "data": str(a.glue_data) if a.glue_data else "hub"},
        "sizes": [sweep.results(size) for size in sizes],
    }
    write_json_atomic(a.output / "sweep.json", summary)
    write_text_atomic(a.output / "sweep.md", render_markdown(summary))
    plot(summary, a.output / "sweep.png")
    print("\n" + render_markdown(summary), flush=True)
    log(f"written: {a.output / 'sweep.json'}, sweep.md, sweep.png")
