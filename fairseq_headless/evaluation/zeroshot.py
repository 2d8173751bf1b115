"""Zero-shot evaluation of exported causal models with lm-evaluation-harness (paper §4.2, Tab.4).

Each ``zeroshot_tasks/*.yaml`` names the lm-eval task it derives from and its local file; at run time a
small lm-eval YAML ``include:``s that task, so prompts and metrics are lm-eval's, never copied here. The
per-sample scores feed the paired test of :mod:`fairseq_headless.evaluation.zeroshot_compare`."""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence
from ..cli import InputError
from .readers import read_jsonl


TASKS_DIR = Path(__file__).parent / "zeroshot_tasks"
LM_EVAL_VERSION = "0.4.13"  # the version the task files were written against (setup.py extra `zeroshot`)
# Tab.4's columns in the paper's order, then LAMBADA (Tab.3).
TABLE4_TASKS = ("boolq", "crows_pairs_english", "race", "sciq", "pubmedqa", "qasper", "lambada_openai")


@dataclass(frozen=True)
class ZeroShotTask:
    """One task of the suite, as read from ``zeroshot_tasks/<name>.yaml``."""

    name: str  # the suite's name (the YAML's file name)
    lm_eval_task: str  # the name lm-eval reports results under
    derive_from: str  # lm-eval's YAML, relative to lm_eval/tasks/
    label: str  # the paper's column title
    file: str  # under --task-files
    split: str  # the split of the source dataset the file holds
    source: str  # where to get it
    fields: tuple  # keys every line must have
    metric: str  # the metric of the paper's table
    overrides: dict = field(default_factory=dict)


def load_tasks() -> dict:
    """{name: ZeroShotTask} for every YAML of ``zeroshot_tasks/``, in the paper's column order."""
    import yaml
    found = {}
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        found[path.stem] = ZeroShotTask(path.stem, raw["lm_eval_task"], raw["derive_from"], raw["label"], raw["file"],
                                        raw["split"], raw["source"], tuple(raw["fields"]), raw["metric"],
                                        raw.get("overrides") or {})
    order = {name: i for i, name in enumerate(TABLE4_TASKS)}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def select_tasks(names: Sequence[str]) -> list:
    tasks = load_tasks()
    if list(names) == ["all"]:
        return list(tasks.values())
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise InputError(f"--tasks: unknown task(s) {', '.join(unknown)}; choose among {', '.join(tasks)} or 'all'")
    return [task for name, task in tasks.items() if name in names]  # the paper's column order


def check_task_file(task: ZeroShotTask, task_files: Path) -> Path:
    """The task's local file, checked line by line before any model is loaded."""
    path = task_files / task.file
    expected = (f"JSON lines, one record per line with fields {', '.join(task.fields)} ({task.source}; layout in "
                "docs/evaluation.md)")
    if not path.is_file():
        raise InputError(f"--task-files {task_files}: missing {task.file} for {task.name}; expected {expected}")
    try:
        read_jsonl(path, task.fields)
    except InputError as e:
        raise InputError(f"{e}; expected {expected}") from None
    return path


def lm_eval_tasks_dir() -> Path:
    import importlib.util
    spec = importlib.util.find_spec("lm_eval")
    if spec is None:
        raise InputError(f"lm-evaluation-harness is not installed: pip install -e \".[zeroshot]\" "
                         f"(lm-eval=={LM_EVAL_VERSION})")
    return Path(spec.submodule_search_locations[0]) / "tasks"


def compose_task_yaml(task: ZeroShotTask, data_file: Path, folder: Path) -> Path:
    """Write the lm-eval YAML of ``task`` reading ``data_file``: include lm-eval's own, swap the data source."""
    import yaml
    base = lm_eval_tasks_dir() / task.derive_from
    if not base.is_file():
        from importlib.metadata import version
        raise InputError(f"lm-eval {version('lm_eval')} has no {task.derive_from} (task {task.name}); "
                                   f"the task files of this project are written for lm-eval=={LM_EVAL_VERSION}")
    # datasets' JSON-lines builder (no hub, no network); the local file is the only split, since zero-shot
    # needs no training or few-shot docs.
    config = {"include": str(base), "task": task.lm_eval_task, "dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": {task.split: str(data_file.resolve())}}, "training_split": None,
              "validation_split": None, "test_split": task.split, **task.overrides}
    path = folder / f"{task.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _number(value):
    """lm-eval writes "N/A" for a missing standard error and numpy scalars elsewhere; JSON wants plain floats."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def task_result(task: ZeroShotTask, results: dict) -> dict:
    """One task's entry of the output JSON, from lm-eval's ``simple_evaluate`` output."""
    name = task.lm_eval_task
    aggregated = results["results"][name]
    metrics, stderrs = {}, {}
    for key, value in aggregated.items():
        if "," not in key:
            continue  # "alias" and such
        metric, _filter = key.split(",", 1)
        if metric.endswith("_stderr"):
            stderrs[metric[: -len("_stderr")]] = _number(value)
        else:
            metrics[metric] = _number(value)
    samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
    per_sample = {"doc_id": [s["doc_id"] for s in samples], "doc_hash": [s["doc_hash"] for s in samples]}
    for metric in (samples[0]["metrics"] if samples else []):
        per_sample[metric] = [_plain(s[metric]) for s in samples]
    higher_is_better = results.get("higher_is_better", {}).get(name, {})
    n = results.get("n-samples", {}).get(name, {}).get("effective", len(samples))
    return {"task": task.name, "label": task.label, "lm_eval_task": name, "metric": task.metric,
            "value": metrics.get(task.metric), "stderr": stderrs.get(task.metric),
            "higher_is_better": bool(higher_is_better.get(task.metric, True)), "n": int(n), "metrics": metrics,
            "stderrs": stderrs, "higher_is_better_by_metric": {k: bool(v) for k, v in higher_is_better.items()},
            "derived_from": f"lm_eval/tasks/{task.derive_from}", "overrides": task.overrides, "samples": per_sample}


def evaluate_model(folder: Path, tasks: Sequence[ZeroShotTask], task_files: Path, *, batch_size=8,
                   device: Optional[str] = None, limit: Optional[int] = None, bootstrap_iters: int = 100000,
                   dtype: str = "float32") -> dict:
    """Run lm-eval's ``hf`` model on ``folder`` for ``tasks``; {task name: result entry} plus run information."""
    # Offline by construction: the model is a local folder, the data local files.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    lm_eval_tasks_dir()  # the one-line error when lm-eval is missing
    import lm_eval
    from lm_eval.tasks import TaskManager
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    files = {task.name: check_task_file(task, task_files) for task in tasks}
    with tempfile.TemporaryDirectory(prefix="zeroshot-tasks-") as tmp:
        yaml_paths = [str(compose_task_yaml(task, files[task.name], Path(tmp))) for task in tasks]
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args={"pretrained": str(folder), "backend": "causal", "dtype": dtype},
            tasks=yaml_paths,
            # Only our composed files: no scan of lm-eval's thousands of YAMLs, no name clash.
            task_manager=TaskManager(include_defaults=False),
            num_fewshot=0,
            batch_size=batch_size,
            device=device,
            limit=limit,
            bootstrap_iters=bootstrap_iters,
            log_samples=True,
        )
    return {"tasks": {task.name: task_result(task, results) for task in tasks},
            "lm_eval_version": getattr(lm_eval, "__version__", None), "device": device, "dtype": dtype,
            "batch_size": batch_size, "limit": limit, "bootstrap_iters": bootstrap_iters,
            "task_files": {name: str(path.resolve()) for name, path in files.items()}}
