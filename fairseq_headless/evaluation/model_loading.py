"""An exported encoder folder -> a model with a new task head, checked, and its tokenizer.

Headless exports (``headless_roberta``, ``trust_remote_code=True``) and vanilla ones (``RobertaForMaskedLM``)
both get RoBERTa's task heads; the Auto classes' load report, the only sign of an encoder weight left
random, is checked here and replaced by one summary line."""
from __future__ import annotations

import contextlib
from pathlib import Path

from .encoding import check_tokenizer
from .tasks import MULTIPLE_CHOICE, REGRESSION, TaskSpec
from ..cli import InputError

# Weights a fine-tuning model creates: RobertaForSequenceClassification's `classifier`,
# RobertaForMultipleChoice's `classifier` and the pooler it reads (fairseq has no pooler).
NEW_HEAD_PREFIXES = ("classifier.", "roberta.pooler.", "pooler.")
# Pretraining parts a fine-tuning model drops: the vanilla MLM head, an exported pooler.
DROPPED_PREFIXES = ("lm_head.", "pooler.", "roberta.pooler.")


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' warnings and progress bars (e.g. its load report) for a block."""
    from transformers.utils import logging as hf_logging
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(model_dir: Path):
    from transformers import AutoConfig, AutoTokenizer
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InputError(f"--model {model_dir}: not a Hugging Face model folder (no config.json); export a fairseq "
                         "checkpoint with scripts/convert_to_hf.py first")
    with quiet_transformers():
        try:
            # trust_remote_code: a headless export's classes are the folder's modeling_headless_roberta.py
            config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=True)
            tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=True)
        except (OSError, ValueError) as err:
            raise InputError(f"--model {model_dir}: cannot load its config/tokenizer: {err}") from None
    check_tokenizer(tokenizer, config, model_dir)
    return tokenizer, config


def load_model(model_dir: Path, spec: TaskSpec):
    """The encoder of ``model_dir`` under a new head for ``spec``; returns (model, summary line)."""
    from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification
    model_dir = Path(model_dir)
    kwargs = {"num_labels": spec.num_labels}
    if spec.kind == REGRESSION:
        kwargs["problem_type"] = "regression"
    elif spec.kind != MULTIPLE_CHOICE:
        kwargs["problem_type"] = "single_label_classification"
        kwargs["id2label"] = dict(enumerate(spec.labels))
        kwargs["label2id"] = {label: i for i, label in enumerate(spec.labels)}
    auto = AutoModelForMultipleChoice if spec.kind == MULTIPLE_CHOICE else AutoModelForSequenceClassification
    with quiet_transformers():
        try:
            model, info = auto.from_pretrained(model_dir, output_loading_info=True, local_files_only=True,
                                               trust_remote_code=True, **kwargs)
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"--model {model_dir}: cannot load it as {auto.__name__}: {err}") from None
    missing = sorted(info["missing_keys"])
    unexpected = sorted(info["unexpected_keys"])
    mismatched = sorted(str(k) for k in info["mismatched_keys"])
    not_loaded = [k for k in missing if not k.startswith(NEW_HEAD_PREFIXES)]
    if not_loaded or mismatched:
        shown = (not_loaded + mismatched)[:5]
        raise InputError(f"--model {model_dir}: {len(not_loaded) + len(mismatched)} encoder weights did not load into "
                         f"{type(model).__name__} (e.g. {', '.join(shown)}); fine-tuning would start from random "
                         "weights. Is it a RoBERTa encoder export (scripts/convert_to_hf.py)?")
    heads = sorted({k.split(".weight")[0].split(".bias")[0] for k in missing})
    summary = f"{model_dir.name}: encoder loaded into {type(model).__name__}; new head {', '.join(heads) or '(none)'}"
    dropped = [k for k in unexpected if k.startswith(DROPPED_PREFIXES)]
    other = [k for k in unexpected if not k.startswith(DROPPED_PREFIXES)]
    if dropped:
        summary += f"; unused pretraining weights: {', '.join(sorted({k.split('.')[0] for k in dropped}))}"
    if other:
        summary += f"; WARNING unused checkpoint weights: {', '.join(other[:5])}"
    return model, summary
