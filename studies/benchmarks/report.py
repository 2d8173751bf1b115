"""Tables and plots of the benchmarks: markdown for BENCHMARKS.md, PNGs in the spirit of Fig.2 and Fig.6b."""
from collections import defaultdict

from tabulate import tabulate

from fairseq_headless.cli import InputError
from studies import figures

COLORS = {"vanilla": "tab:purple", "headless (dense)": "tab:green", "headless (sparse)": "tab:red",
          "body, trivial loss (dense)": "tab:blue", "body, trivial loss (sparse)": "tab:orange",
          "cross_entropy": "tab:purple", "cross_entropy_floor": "tab:pink", "cwt": "tab:green",
          "cwt_chunked": "tab:red", "cwt_chunked_recompute": "tab:brown", "cwt_floor": "tab:olive"}


def check_output(folder, result_name, force) -> None:
    """--output must be a folder, and one without an earlier result unless --force."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--output {folder} is a file; give a folder")
    if (folder / result_name).exists() and not force:
        raise InputError(f"--output {folder} already holds {result_name}; add --force to overwrite it")


def table(rows, headers) -> str:
    return tabulate(rows, headers, tablefmt="github", floatfmt=",.3f", intfmt=",", missingval="—")


def plot(path, panels, rows=1) -> None:
    """One PNG of panels (studies.figures), each a dict: title, x, y (axis labels), log ("x", "xy" or ""),
    lines: {label: (xs, ys)}."""
    columns = -(-len(panels) // rows)
    figure, axes = figures.grid(rows, columns, 5.2 * columns, 3.9 * rows)
    for index, panel in enumerate(panels):
        ax = axes[index % rows][index // rows]
        figures.lines(ax, dict(sorted(panel["lines"].items())), panel["x"], panel["y"], panel.get("title", ""),
                      log_y="y" in panel.get("log", ""), styles={k: {"color": COLORS[k]} for k in panel["lines"] if k in COLORS})
        if "x" in panel.get("log", ""):
            ax.set_xscale("log", base=2 if panel["x"] == "positions K" else 10)
    figures.save(figure, path)


def _points(series, which):
    """{label: {x: (y0, y1)}} -> {label: (xs, ys)} of element ``which``, points without a value left out."""
    lines = {}
    for label, points in series.items():
        xs = [x for x in sorted(points) if points[x][which] is not None]
        if xs:
            lines[label] = (xs, [points[x][which] for x in xs])
    return lines


def plot_vocab(records, path):
    """Fig.6b's spirit: throughput and peak memory against the vocabulary size, per architecture."""
    panels = []
    for family, arch, batch in sorted({(r["family"], r["arch"], r["batch"]) for r in records}):
        rows = [r for r in records if (r["arch"], r["batch"]) == (arch, batch)]
        rows = [r for r in rows if r["negatives"] == "batch"] or rows
        series = defaultdict(dict)
        for r in rows:
            mode, v = r["embedding_update"], r["vocab_size"]
            series["vanilla"][v] = (r["vanilla_tokens_per_s"], r["vanilla_peak_mb"])
            series[f"headless ({mode})"][v] = (r["headless_tokens_per_s"], r["headless_peak_mb"])
            series[f"body, trivial loss ({mode})"][v] = (r["body_tokens_per_s"], r["body_peak_mb"])
            reference = r.get("reference")  # measured interleaved in this group
            if reference:
                series[f"headless ({mode})"].setdefault(reference["vocab_size"], (
                    r["tokens_per_step"] / reference["headless_step_s"], reference["headless_peak_mb"]))
        title = f"{arch} ({family}), batch {batch}x{rows[0]['seq_len']}"
        panels += [dict(title=title, x="vocabulary size", y="training tokens / s", log="x", lines=_points(series, 0)),
                   dict(title=title, x="vocabulary size", y="peak memory (MB)", log="x", lines=_points(series, 1))]
    plot(path, panels, rows=2)


def plot_batch(records, path) -> bool:
    """Fig.2's spirit: step latency and memory against the micro-batch; False (no file) without a batch sweep."""
    panels = []
    for arch, vocab in sorted({(r["arch"], r["vocab_size"]) for r in records}):
        rows = [r for r in records if (r["arch"], r["vocab_size"]) == (arch, vocab) and r["negatives"] == "batch"]
        if len({r["batch"] for r in rows}) < 2:
            continue
        series = defaultdict(dict)
        for r in rows:
            series["vanilla"][r["batch"]] = (r["vanilla_step_s"], r["vanilla_peak_mb"])
            series[f"headless ({r['embedding_update']})"][r["batch"]] = (r["headless_step_s"], r["headless_peak_mb"])
        title = f"{arch}, V={vocab:,}"
        panels += [dict(title=title, x="micro-batch (sequences)", y="step latency (s)", lines=_points(series, 0)),
                   dict(title=title, x="micro-batch (sequences)", y="peak memory (MB)", lines=_points(series, 1))]
    if panels:
        plot(path, panels, rows=2)
    return bool(panels)


def plot_loss(records, path):
    """Time and peak memory of the loss alone against the number of positions K."""
    series = defaultdict(dict)
    for r in records:
        series[r["implementation"]][r["num_positions"]] = (r["time_s"], r["peak_extra_mb"])
    memory = {k: v for k, v in _points(series, 1).items() if not k.endswith("floor")}
    plot(path, [dict(x="positions K", y="forward + backward (s)", log="xy", lines=_points(series, 0)),
                dict(x="positions K", y="peak extra memory (MB)", log="xy", lines=memory)])


def plot_curves(curves, path):
    plot(path, [dict(title=f"{curves['config']} on {curves['data_name']}", x="updates", y="CWT loss (bits)",
                     lines={f"{mode} embedding update (train)": (c["updates"], c["train_loss"])
                            for mode, c in curves["curves"].items()})])


def machine_lines(machine):
    gpu = machine.get("gpu")
    return [
        f"- CPU: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, {machine['torch_threads']} torch "
        f"threads, {machine['memory_gb']} GB; load average at start {machine['load_average_at_start']}, "
        f"at end {machine.get('load_average_at_end')}",
        f"- GPU: {gpu['name']} ({gpu['memory_gb']} GB, CUDA {gpu['cuda']})" if gpu else "- GPU: none",
        f"- torch {machine['torch']}, fairseq {machine['fairseq']}, Python {machine['python']}; device "
        f"{machine['device']}" + (f", {machine['precision']}" if machine.get("precision") else ""),
    ]


def steps_table(records) -> str:
    return table([[r["family"], r["arch"], r["vocab_size"], f"{r['batch']}x{r['seq_len']}", r["embedding_update"],
                   r["negatives"], r["chunk_size"], r["vanilla_step_s"], r["headless_step_s"], r["body_step_s"],
                   r["frozen_embedding_step_s"], f"**{r['speedup']:.2f}x**", round(r["vanilla_tokens_per_s"]),
                   round(r["headless_tokens_per_s"]), _round(r["vanilla_peak_mb"]), _round(r["headless_peak_mb"])]
                  for r in records],
                 ["family", "arch", "V", "batch", "update", "negatives", "chunk", "vanilla s", "headless s", "body s",
                  "frozen-emb. s", "speed-up", "vanilla tok/s", "headless tok/s", "vanilla MB", "headless MB"])


def _round(value):
    return None if value is None else round(value)


def loss_table(records) -> str:
    floors = {(r["implementation"], r["num_positions"]): r["time_s"] for r in records}
    rows = []
    for r in records:
        name = r["implementation"]
        floor = floors.get(("cross_entropy_floor" if name.startswith("cross") else "cwt_floor", r["num_positions"]))
        ratio = r["time_s"] / floor if floor and r["time_s"] and not name.endswith("floor") else None
        rows.append([r["num_positions"], name + (f" (chunk {r['chunk_size']})" if r["chunk_size"] else ""),
                     r["time_s"], None if ratio is None else f"{ratio:.2f}x", _round(r["peak_extra_mb"]),
                     f"skipped: {r['skipped']}" if r["skipped"] else r.get("note") or ""])
    return table(rows, ["K", "implementation", "time s", "x its floor", "peak extra MB", "note"])


def markdown(result, command):
    lines = ["## Run", "", f"`{command}`", ""] + machine_lines(result["machine"]) + [""]
    if result["steps"]:
        lines += ["### Training steps (median of the timed steps; peak = parameters + optimizer state + the "
                  "step's extra memory)", "", steps_table(result["steps"]), ""]
        lines += [f"- interleaved in the {r['arch']} V={r['vocab_size']:,} group: headless ({r['embedding_update']}, "
                  f"{r['negatives']}) at V={r['reference']['vocab_size']:,}: {r['reference']['headless_step_s']:.3f} s, "
                  f"{r['reference']['headless_peak_mb'] or 0:,.0f} MB" for r in result["steps"] if r.get("reference")]
    lines += [f"- skipped: {s['arch']} V={s['vocab_size']:,} batch {s['batch']}: {s['reason']}"
              for s in result.get("steps_skipped", [])]
    if result["loss"]:
        lines += ["", "### The loss alone (one forward and backward)", "", loss_table(result["loss"]), ""]
    if result.get("loss_curves"):
        lines += ["### Loss curves, dense and sparse embedding update", ""]
        lines += [f"- {mode}: final train loss {c['train_loss'][-1]:.3f} after {c['updates'][-1]} updates, valid loss "
                  f"{c['valid_loss'] if c['valid_loss'] is None else round(c['valid_loss'], 3)}"
                  for mode, c in result["loss_curves"]["curves"].items()] + [""]
    return "\n".join(lines) + "\n"
