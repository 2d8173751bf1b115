"""The daggers of paper Tab.4: is the best zero-shot score significantly better than the second best?

A one-tailed t-test at alpha = 0.05 (our reading of the caption's "power 0.95"): ``paired`` over
per-sample scores when both result files hold them, else ``welch`` from mean, stderr and n.
The reasoning and the formulas: docs/evaluation.md."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence
from ..cli import InputError
from .results import table


TESTS = ("auto", "paired", "welch")


def load_result(path: Path) -> dict:
    """A NAME.json of scripts/eval_zeroshot.py (or the same shape written by hand: value, stderr, n)."""
    if not path.is_file():
        raise InputError(f"--results {path}: no such file (a NAME.json written by scripts/eval_zeroshot.py)")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"--results {path}: not JSON ({e.msg})") from None
    if not isinstance(result, dict) or not isinstance(result.get("model"), str) or not isinstance(
            result.get("tasks"), dict):
        raise InputError(f"--results {path}: no \"model\" name and \"tasks\" object; "
                                   "expected a NAME.json of scripts/eval_zeroshot.py")
    for name, entry in result["tasks"].items():
        missing = [k for k in ("metric", "value", "n", "higher_is_better") if entry.get(k) is None]
        if missing:
            raise InputError(f"--results {path}: task {name} lacks {', '.join(missing)}")
    result["_path"] = str(path)
    return result


def _one_sided(statistic: float, pvalue: float, improvement: float, spread: float) -> tuple:
    """(t, p) with the degenerate zero-variance cases made explicit instead of nan."""
    if spread == 0:
        # Every difference identical: no uncertainty; "better" iff the difference is positive.
        return None, (0.0 if improvement > 0 else 1.0)
    return (float(statistic) if math.isfinite(statistic) else None), float(pvalue)


def paired_test(best: Sequence[float], second: Sequence[float], higher_is_better: bool) -> dict:
    """One-sided paired t-test of H1 "best is better than second" over the same samples."""
    import numpy as np
    from scipy import stats
    best, second = np.asarray(best, dtype=np.float64), np.asarray(second, dtype=np.float64)
    d = best - second if higher_is_better else second - best
    n = len(d)
    if n < 2:
        return {"test": "paired", "t": None, "df": None, "p": None, "n": n, "note": "fewer than 2 samples: no test"}
    res = stats.ttest_rel(best, second, alternative="greater" if higher_is_better else "less")
    statistic = res.statistic if higher_is_better else -res.statistic  # reported as "improvement / its stderr"
    t, p = _one_sided(statistic, res.pvalue, d.mean(), d.std(ddof=1))
    return {"test": "paired", "t": t, "df": n - 1, "p": p, "n": n, "mean_difference": float(d.mean()),
            "stderr_difference": float(d.std(ddof=1) / math.sqrt(n))}


def welch_test(best: tuple, second: tuple, higher_is_better: bool) -> dict:
    """One-sided Welch t-test from (mean, stderr, n) of each model."""
    from scipy import stats
    (m1, s1, n1), (m2, s2, n2) = best, second
    if s1 is None or s2 is None or n1 < 2 or n2 < 2:
        return {"test": "welch", "t": None, "df": None, "p": None, "note": "no standard error: no test"}
    res = stats.ttest_ind_from_stats(m1, s1 * math.sqrt(n1), n1, m2, s2 * math.sqrt(n2), n2, equal_var=False,
                                     alternative="greater" if higher_is_better else "less")
    improvement = (m1 - m2) if higher_is_better else (m2 - m1)
    statistic = res.statistic if higher_is_better else -res.statistic
    t, p = _one_sided(statistic, res.pvalue, improvement, math.hypot(s1, s2))
    v1, v2 = s1 ** 2, s2 ** 2  # Welch-Satterthwaite degrees of freedom, as scipy uses
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1)) if v1 + v2 > 0 else None
    return {"test": "welch", "t": t, "df": df, "p": p, "stderr_difference": math.hypot(s1, s2)}


def _aligned_samples(task: str, metric: str, first: dict, second: dict) -> Optional[tuple]:
    """Per-sample scores of both models over the same samples, or None when a file has none."""
    a, b = first["tasks"][task].get("samples") or {}, second["tasks"][task].get("samples") or {}
    if metric not in a or metric not in b or not isinstance((a[metric] or [None])[0], (int, float)):
        return None
    ids_a = dict(zip(a["doc_id"], a.get("doc_hash", [None] * len(a["doc_id"]))))
    ids_b = dict(zip(b["doc_id"], b.get("doc_hash", [None] * len(b["doc_id"]))))
    if ids_a != ids_b:
        raise InputError(f"task {task}: {first['model']} ({first['_path']}) and {second['model']} ({second['_path']}) "
                         "were scored on different samples (ids or documents differ); rerun with the same "
                         "--task-files and --limit, or pass --test welch")
    score_a, score_b = dict(zip(a["doc_id"], a[metric])), dict(zip(b["doc_id"], b[metric]))
    ids = sorted(score_a)
    return [score_a[i] for i in ids], [score_b[i] for i in ids]


def compare(results: Sequence[dict], alpha: float = 0.05, test: str = "auto") -> dict:
    """Per task: best vs second best, the chosen one-tailed test, and whether it earns a dagger."""
    if len(results) < 2:
        raise InputError("--results: give at least two models' files")
    names = [r["model"] for r in results]
    if len(set(names)) != len(names):
        raise InputError(f"--results: model names repeat ({', '.join(names)}); each file needs its own")
    common = [t for t in results[0]["tasks"] if all(t in r["tasks"] for r in results)]
    skipped = sorted({t for r in results for t in r["tasks"]} - set(common))
    tasks = {}
    for task in common:
        entries = {r["model"]: r["tasks"][task] for r in results}
        first = entries[names[0]]
        metric, higher = first["metric"], bool(first["higher_is_better"])
        if any(e["metric"] != metric for e in entries.values()):
            raise InputError(f"task {task}: the files report different metrics "
                                       f"({', '.join(sorted({e['metric'] for e in entries.values()}))})")
        ranked = sorted(results, key=lambda r: r["tasks"][task]["value"], reverse=higher)
        best, second = ranked[0], ranked[1]
        eb, es = best["tasks"][task], second["tasks"][task]
        welch = welch_test((eb["value"], eb.get("stderr"), eb["n"]), (es["value"], es.get("stderr"), es["n"]), higher)
        paired, why = None, None
        if test != "welch":
            aligned = _aligned_samples(task, metric, best, second)
            if aligned is not None:
                paired = paired_test(*aligned, higher)
            elif test == "paired":
                raise InputError(f"task {task}: --test paired needs per-sample {metric} scores in both "
                                           "files (scripts/eval_zeroshot.py writes them)")
            else:
                why = "no per-sample scores: Welch t-test from mean, stderr and n"
        chosen = paired if paired is not None else welch
        tasks[task] = {
            "label": first.get("label", task),
            "metric": metric,
            "higher_is_better": higher,
            "values": {name: e["value"] for name, e in entries.items()},
            "stderrs": {name: e.get("stderr") for name, e in entries.items()},
            "n": {name: e["n"] for name, e in entries.items()},
            "best": best["model"],
            "second": second["model"],
            "difference": eb["value"] - es["value"],  # best minus second, in the metric's units (fraction)
            "test": chosen["test"],
            "t": chosen["t"],
            "df": chosen["df"],
            "p": chosen["p"],
            "significant": chosen["p"] is not None and chosen["p"] < alpha,
            "paired": paired,
            "welch": welch,
            **({"note": why} if why else {}),
        }
    return {"alpha": alpha, "test": test, "models": names, "files": [r["_path"] for r in results],
            "tasks": tasks, "skipped_tasks": skipped}


# ------------------------------------------------------------------------------------------
# outputs


def _cell(entry: dict, model: str) -> str:
    value, stderr = entry["values"][model], entry["stderrs"][model]
    dagger = "†" if entry["significant"] and entry["best"] == model else ""
    text = f"{100 * value:.1f}{dagger}"
    return text + (f" (±{100 * stderr:.1f})" if stderr is not None else "")


def _number(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def markdown_table(comparison: dict) -> str:
    tasks = comparison["tasks"]
    heads = [e["label"] + (" ↓" if not e["higher_is_better"] else "") for e in tasks.values()]
    test_words = {"auto": "paired over the same samples where both files hold per-sample scores, else Welch",
                  "paired": "paired over the same samples", "welch": "Welch, from mean, stderr and n"}
    lines = ["# Zero-shot evaluation (paper Tab.4)", ""]
    lines.append(table(["model", *heads], [[model, *(_cell(e, model) for e in tasks.values())]
                                          for model in comparison["models"]]))
    lines += [f"Scores x 100 (± lm-eval's standard error). ↓: lower is better (CrowS-Pairs: stereotype percentage). "
              f"†: best score significantly better than the second best, one-tailed t-test "
              f"({test_words[comparison['test']]}), alpha = {comparison['alpha']:g}.",
              "",
              table(["task", "metric", "best", "second", "difference", "test", "t", "df", "p", "†"],
                    [[e["label"], e["metric"], e["best"], e["second"], f"{100 * e['difference']:+.2f}", e["test"],
                      _number(e["t"], ".3f"), _number(e["df"], ".1f"), _number(e["p"], ".4g"),
                      "†" if e["significant"] else ""] for e in tasks.values()])]
    if comparison["skipped_tasks"]:
        lines += ["", "Not in every file, so not compared: " + ", ".join(comparison["skipped_tasks"]) + "."]
    return "\n".join(lines) + "\n"


def plot(comparison: dict, path: Path) -> None:
    """Grouped bars per task (x 100) with lm-eval's standard errors; † above a significant best."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks, models = comparison["tasks"], comparison["models"]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(tasks), 4))
    for i, model in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(tasks))]
        values = [100 * e["values"][model] for e in tasks.values()]
        errors = [100 * (e["stderrs"][model] or 0) for e in tasks.values()]
        ax.bar(xs, values, width, yerr=errors, capsize=3, label=model)
        for x, v, err, e in zip(xs, values, errors, tasks.values()):
            if e["significant"] and e["best"] == model:
                ax.text(x, v + err + 0.5, "†", ha="center", va="bottom", fontsize=12)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([e["label"] + (" ↓" if not e["higher_is_better"] else "") for e in tasks.values()])
    ax.set_ylabel("score x 100")
    ax.set_title(f"Zero-shot (paper Tab.4); †: one-tailed {comparison['test']} t-test, alpha {comparison['alpha']:g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
