"""The export, LAMBADA and data-preparation steps that several experiments take, errors mapped once.

The demo, the vocabulary sweep and the along-training evaluation each export checkpoints
(:mod:`fairseq_headless.export`), score LAMBADA (:mod:`fairseq_headless.lambada`) or prepare data
(:mod:`fairseq_headless.data.cli`) in-process; these functions are those calls with the context
every caller adds to an error. A failed parity check stays :class:`~fairseq_headless.export.ParityError`
(exit status 1: a bug, not an input to fix).
"""
from __future__ import annotations

from pathlib import Path

from fairseq_headless.cli import InputError, run


def export(checkpoint: Path, output: Path, data: Path | None) -> dict:
    """:func:`fairseq_headless.export.convert` (with its fairseq parity check): the folder, class and parity."""
    from fairseq_headless.export import ParityError, convert

    try:  # force: a folder without a finished marker is a leftover of an interrupted export
        summary = convert(checkpoint, output, data=data, force=True)
    except ParityError as e:
        raise ParityError(f"exporting {checkpoint} to Hugging Face failed: {e}") from None
    except InputError as e:
        raise InputError(f"exporting {checkpoint} to Hugging Face failed: {e}") from None
    return {"path": str(output), "hf_class": summary["hf_class"], "max_abs_diff": max(summary["parity"].values())}


def lambada(checkpoint: Path, passages_file: Path, limit: int | None, data_bin: Path | None, device: str | None,
            batch_size: int) -> dict:
    """The LAMBADA scores of one checkpoint (lm-evaluation-harness's ``lambada_openai``), as scripts/eval_lambada.py."""
    from fairseq_headless import lambada as eval_lambada

    passages = eval_lambada.read_passages(passages_file)[:limit]
    scorer = eval_lambada.load_scorer(checkpoint, data_bin, device)
    metrics = eval_lambada.evaluate(scorer, passages, batch_size, show_progress=True)
    return {**metrics, "passages": len(passages), "model_type": scorer.description}


def prepare_options(argv: list):
    """scripts/prepare_data.py's parsed options (``fairseq_headless.data.prepare.Options``)."""
    from fairseq_headless.data import cli as prepare_data

    return prepare_data.parse_options(argv)


def prepare(argv: list) -> int:
    """scripts/prepare_data.py run in-process; its exit status (an input error printed as one ``error:`` line)."""
    from fairseq_headless.data import cli as prepare_data

    return run(prepare_data.main, argv)
