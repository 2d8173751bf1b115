"""The scripts the experiments still call in-process: the Hugging Face export, LAMBADA and data preparation.

# merge: issue-18 export move
scripts/convert_to_hf.py, scripts/eval_lambada.py and scripts/prepare_data.py are moved into the package
on another branch of issue 18. Every use the experiments make of them goes through one function here,
so that the merge repoints this module only (each function to the package's new home) and deletes
:func:`_script`. Until then the scripts are loaded by file under their own module names, once per process.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..cli import InputError

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


class ExportParityError(RuntimeError):
    """The export disagrees with the fairseq model: a bug, not an input to fix (exit status 1)."""


def _script(name: str):  # merge: issue-18 export move (remove once nothing below uses it)
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return module


def export(checkpoint: Path, output: Path, data: Path | None) -> dict:  # merge: issue-18 export move
    """scripts/convert_to_hf.py's ``convert`` (with its fairseq parity check): the folder, class and parity."""
    convert_to_hf = _script("convert_to_hf")
    try:  # force: a folder without a finished marker is a leftover of an interrupted export
        summary = convert_to_hf.convert(checkpoint, output, data=data, force=True)
    except (convert_to_hf.ExportError, convert_to_hf.DataError) as e:
        raise InputError(f"exporting {checkpoint} to Hugging Face failed: {e}") from None
    except convert_to_hf.ParityError as e:
        raise ExportParityError(f"exporting {checkpoint} to Hugging Face failed: {e}") from None
    return {"path": str(output), "hf_class": summary["hf_class"], "max_abs_diff": max(summary["parity"].values())}


def lambada(checkpoint: Path, passages_file: Path, limit: int | None, data_bin: Path | None, device: str | None,
            batch_size: int) -> dict:  # merge: issue-18 export move
    """scripts/eval_lambada.py's scores of one checkpoint (lm-evaluation-harness's ``lambada_openai``)."""
    eval_lambada = _script("eval_lambada")
    try:
        passages = eval_lambada.read_passages(passages_file)[:limit]
        scorer = eval_lambada.load_scorer(checkpoint, data_bin, device)
        metrics = eval_lambada.evaluate(scorer, passages, batch_size, show_progress=True)
    except eval_lambada.InputError as e:
        raise InputError(str(e)) from None
    return {**metrics, "passages": len(passages), "model_type": scorer.description}


def prepare_options(argv: list):  # merge: issue-18 export move
    """scripts/prepare_data.py's parsed options (``fairseq_headless.data.prepare.Options``)."""
    return _script("prepare_data").parse_options(argv)


def prepare(argv: list) -> int:  # merge: issue-18 export move
    """scripts/prepare_data.py run in-process; its exit status (it prints its own ``error:`` line)."""
    return _script("prepare_data").main(argv)
