"""The paper's downstream metrics (Tab.1, 2, 5), computed with scikit-learn and scipy.

Matthews correlation for CoLA, Spearman for STS-B, accuracy elsewhere, plus F1 (label 1) for MRPC and
QQP; values are fractions, tables print them x 100. (Not `evaluate`: it fetches code from a hub.)"""
from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .tasks import REGRESSION, TaskSpec


def accuracy(labels, predictions) -> float:
    return float(accuracy_score(labels, predictions))


def f1(labels, predictions) -> float:
    """F1 of class 1 (MRPC: equivalent, QQP: duplicate)."""
    return float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0))


def matthews(labels, predictions) -> float:
    return float(matthews_corrcoef(labels, predictions))


def _correlation(statistic):
    def correlation(labels, scores) -> float:
        if np.std(scores) == 0 or np.std(labels) == 0:
            return 0.0  # constant predictions (a collapsed model) carry no ranking: no correlation
        return float(statistic(labels, scores).statistic)
    return correlation


spearman, pearson = _correlation(spearmanr), _correlation(pearsonr)


METRICS = {"accuracy": accuracy, "f1": f1, "matthews": matthews, "spearman": spearman, "pearson": pearson}


def task_metrics(spec: TaskSpec, labels, logits) -> dict:
    """Every metric of ``spec`` from the model's raw outputs (logits, or scores for a regression)."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    predictions = logits.reshape(-1) if spec.kind == REGRESSION else logits.reshape(len(labels), -1).argmax(-1)
    return {name: METRICS[name](labels, predictions) for name in spec.metrics}


def compute_metrics_fn(spec: TaskSpec):
    """The Trainer's ``compute_metrics`` for ``spec``."""
    def compute_metrics(eval_prediction) -> dict:
        logits = eval_prediction.predictions
        if isinstance(logits, tuple):  # (logits, hidden states...) when a model returns more
            logits = logits[0]
        return task_metrics(spec, eval_prediction.label_ids, logits)
    return compute_metrics
