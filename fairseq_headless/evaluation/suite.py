"""A fine-tuning suite run: models x jobs x seeds, resume, --force, per-job JSON, and the tables of a results folder.

    OUTPUT/<model>/<job>.json                 per-job summary: settings, every seed, mean ± std
    OUTPUT/<model>/runs/<job>/seed-<s>/       result.json (its settings and result: stages.Stage), checkpoints
    OUTPUT/results_<suite>.md / .json / .png  the paper's table for the suite, one row per model

A finished seed is reused with the same settings, an interrupted one resumes from its last epoch;
other settings are an error unless ``--force`` (docs/evaluation.md)."""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..cli import InputError
from ..files import write_json_atomic, write_text_atomic as write_atomic
from ..stages import Stage, StageSettingsError
from .results import bar_chart, markdown_table, mean_std, secondary_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    name: str  # the row label of the tables, and the folder name under OUTPUT
    path: Path


def parse_models(values: list) -> list:
    """``--model DIR`` or ``--model NAME=DIR`` (repeatable); names default to the folder's name."""
    refs = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = "", value
        path = Path(path).expanduser().resolve()
        name = name or path.name
        if not path.is_dir():
            raise InputError(f"--model {value}: no such folder")
        if not name or "/" in name or name.startswith("."):
            raise InputError(f"--model {value}: '{name}' cannot be a folder name; use NAME=DIR")
        if any(r.name == name for r in refs):
            raise InputError(f"--model {value}: two models named '{name}'; name them with NAME=DIR")
        refs.append(ModelRef(name, path))
    if not refs:
        raise InputError("--model: give at least one exported model folder")
    return refs


class SuiteRunner:
    """Runs seeds of jobs into ``output``; the layout: the module docstring; the tables: :func:`write_tables`."""

    def __init__(self, output: Path, force: bool = False, keep_checkpoints: bool = False):
        self.output = Path(output)
        self.force = force
        self.keep_checkpoints = keep_checkpoints
        self._cleared = set()

    def run(self, model: ModelRef, job: str, settings: dict, seeds: list, train: Callable) -> dict:
        """Every seed of ``job`` (``train(seed, run_dir) -> RunResult``); returns the job summary."""
        job_dir = self.output / model.name / "runs" / job
        if self.force and (model.name, job) not in self._cleared:
            shutil.rmtree(job_dir, ignore_errors=True)
            self._cleared.add((model.name, job))
        results = {}
        for seed in seeds:
            run_dir = job_dir / f"seed-{seed}"
            results[str(seed)] = self._run_seed(model, job, settings, seed, run_dir, train)
        return results

    def _run_seed(self, model, job, settings, seed, run_dir, train) -> dict:
        stage = Stage(run_dir / "result.json", settings)
        try:
            record = stage.result()
        except StageSettingsError as e:
            raise InputError(f"{e}; use another --output, or --force to delete and redo it") from None
        if record is not None:
            logger.info(f"{model.name} {job} seed {seed}: finished before, reusing {stage.marker}")
            return record
        stage.start()
        run = train(seed, run_dir)
        record = stage.finish({"seed": seed, "best_epoch": run.best_epoch, "score": run.score, "best": run.best,
                               "epochs": run.epochs, "model": run.model_summary})
        if not self.keep_checkpoints:
            for checkpoint in run_dir.glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
        return record

    def write_job_summary(self, model: ModelRef, job: str, suite: str, section: str, settings: dict,
                          seed_results: dict) -> dict:
        """OUTPUT/<model>/<job>.json: each dev set's metrics per seed at its best epoch, mean and std."""
        columns = {}
        for seed, record in seed_results.items():
            for dev_name, metrics in record["best"].items():
                for metric, value in metrics.items():
                    columns.setdefault(dev_name, {}).setdefault(metric, {})[seed] = value
        stats = {c: {m: dict(zip(("mean", "std"), mean_std(v.values()))) for m, v in ms.items()}
                 for c, ms in columns.items()}
        summary = {"model": model.name, "model_dir": str(model.path), "job": job, "suite": suite,
                   "section": section, "settings": settings, "columns": columns, "mean_std": stats,
                   "best_epochs": {s: r["best_epoch"] for s, r in seed_results.items()}, "seeds": seed_results}
        write_json_atomic(self.output / model.name / f"{job}.json", summary)
        return summary


def collect(output: Path, suite: str) -> dict:
    """{section: {model: {column: {metric: {seed: value}}}}} from every job summary of ``suite``."""
    found = {}
    for path in sorted(Path(output).glob("*/*.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(summary, dict) or summary.get("suite") != suite:
            continue
        row = found.setdefault(summary["section"], {}).setdefault(summary["model"], {})
        row.update(summary["columns"])
    return found


def write_tables(output: Path, suite: str, title: str, sections: list, avg_columns: list, main_metric: dict,
                 notes: list, last_rows: tuple = ()) -> Path:
    """results_<suite>.md/.json/.png from every model's summaries; ``sections`` = [(key, subtitle, columns)].

    Rows are sorted by model name, those named in ``last_rows`` (a control) at the end."""
    output = Path(output)
    collected = collect(output, suite)
    parts, panels = [f"# {title}\n"], []
    for key, subtitle, columns in sections:
        rows = sorted(collected.get(key, {}).items(), key=lambda r: (r[0] in last_rows, r[0]))
        if not rows:
            continue
        if subtitle:
            parts.append(f"## {subtitle}\n")
        parts.append(markdown_table(rows, columns, avg_columns, main_metric))
        extra = secondary_table(rows, columns, main_metric)
        if extra:
            parts.append("Other metrics:\n\n" + extra)
        panels.append((subtitle, rows, columns, main_metric))
    parts.append("\n".join(f"- {n}" for n in notes) + "\n")
    md = output / f"results_{suite}.md"
    write_atomic(md, "\n".join(parts))
    write_json_atomic(output / f"results_{suite}.json", collected)
    if panels:
        bar_chart(output / f"results_{suite}.png", panels, title)
    return md
