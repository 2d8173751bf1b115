"""Metrics against hand-computed values, the balanced cross-entropy against App. E.1's formula,
and the seed aggregation / table arithmetic of results.py."""
import math

import numpy as np
import pytest

from helpers.tables import markdown_rows
import torch
import torch.nn.functional as F

from fairseq_headless.evaluation.balanced_loss import balanced_cross_entropy, balanced_loss_func
from fairseq_headless.evaluation.cli import suite_main, xnli_main
from fairseq_headless.evaluation.metrics import accuracy, f1, matthews, pearson, spearman, task_metrics
from fairseq_headless.evaluation.results import cell, markdown_table, mean_std, row_average
from fairseq_headless.evaluation.tasks import GLUE_TASKS

# 10 examples: TP = 3, FN = 1, FP = 1, TN = 5
LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
PREDS = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]


def test_classification_metrics_by_hand():
    assert accuracy(LABELS, PREDS) == pytest.approx(8 / 10)
    assert f1(LABELS, PREDS) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # 0.75
    # (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (15 - 1) / sqrt(4 * 4 * 6 * 6)
    assert matthews(LABELS, PREDS) == pytest.approx(14 / 24)


def test_correlations_by_hand():
    # scores 5 6 7 8 7 -> ranks 1 2 3.5 5 3.5; labels ranks 1..5; Pearson of the ranks = 8 / sqrt(10 * 9.5)
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    # deviations (-1 0 1) and (-7/3 -1/3 8/3): r = 5 / sqrt(2 * 114 / 9)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    # a collapsed regression model (constant output) has no correlation, not NaN
    assert spearman([1, 2, 3], [0.5, 0.5, 0.5]) == 0.0 and pearson([1, 2, 3], [2, 2, 2]) == 0.0


def test_task_metrics_from_logits():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5], [1.0, 0.9]])  # argmax 1 0 1 0
    out = task_metrics(GLUE_TASKS["MRPC"], [1, 0, 0, 0], logits)
    assert out == pytest.approx({"accuracy": 0.75, "f1": 2 / 3})
    assert list(out) == ["accuracy", "f1"]  # the table's metric first
    out = task_metrics(GLUE_TASKS["CoLA"], [1, 0, 0, 0], logits)
    assert list(out) == ["matthews"] and out["matthews"] == pytest.approx(1 / math.sqrt(3))  # (1*2-1*0)/sqrt(2*1*3*2)
    reg = task_metrics(GLUE_TASKS["STS-B"], [0.0, 1.0, 2.0], np.array([[0.1], [0.3], [0.2]]))
    assert reg["spearman"] == pytest.approx(0.5) and reg["pearson"] == pytest.approx(0.5)


def _balanced_reference(logits: np.ndarray, labels: np.ndarray) -> float:
    """App. E.1 in float64: sum_c L_c / w_c with w_c = n_c / N, divided by N."""
    n = len(labels)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    total = 0.0
    for c in np.unique(labels):
        l_c = -sum(log_probs[i, c] for i in range(n) if labels[i] == c)
        w_c = (labels == c).sum() / n
        total += l_c / w_c
    return total / n


def test_balanced_cross_entropy_matches_the_formula():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 3, generator=gen, dtype=torch.float64) * 2
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    expected = _balanced_reference(logits.numpy(), labels.numpy())
    assert balanced_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # = the sum over present classes of their mean CE, which is not torch's weighted mean
    per = F.cross_entropy(logits, labels, reduction="none")
    class_means = sum(per[labels == c].mean() for c in (0, 1, 2))
    assert balanced_cross_entropy(logits, labels).item() == pytest.approx(class_means.item(), rel=1e-6)
    weighted = F.cross_entropy(logits, labels, weight=1 / torch.bincount(labels).double())
    assert weighted.item() == pytest.approx(class_means.item() / 3, rel=1e-6)


def test_balanced_cross_entropy_single_class_is_mean_ce_and_gradient_flows():
    logits = torch.randn(5, 2, requires_grad=True)
    labels = torch.ones(5, dtype=torch.long)
    loss = balanced_loss_func({"logits": logits}, labels)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # multiple choice logits (B x choices) are classification logits over the choices
    mc = torch.randn(4, 2)
    assert balanced_cross_entropy(mc, torch.tensor([0, 1, 1, 1])).item() == pytest.approx(
        _balanced_reference(mc.double().numpy(), np.array([0, 1, 1, 1])), rel=1e-5)


def test_mean_std_and_cells():
    mean, std = mean_std([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and std == pytest.approx(0.1)  # sample std (ddof 1)
    assert mean_std([0.5]) == (0.5, 0.0)
    assert cell({"0": 0.8, "1": 0.9, "2": 1.0}) == "90.00 ± 10.00"
    assert cell(None) == "—"


def test_one_seed_prints_no_spread():
    """One seed says nothing about the spread: its cell is the value alone, never '± 0.00'."""
    from types import SimpleNamespace

    from fairseq_headless.evaluation.cli import _protocol_notes

    assert cell({"3": 0.85432}) == "85.43"
    columns = {"A": {"accuracy": {"0": 0.5}}, "B": {"accuracy": {"0": 0.9}}, "R": {"accuracy": {"0": 0.125}}}
    main = {"A": "accuracy", "B": "accuracy", "R": "accuracy"}
    row = markdown_rows(markdown_table([("m", columns)], ["A", "B", "R"], ["A", "B"], main))[-1]
    assert row == ["m", "50.00", "90.00", "70.00", "12.50"]
    config = SimpleNamespace(epochs=3, loss="balanced", learning_rate=2e-5, weight_decay=0.01, batch_size=16,
                             warmup_ratio=0.06, max_length=128, max_train_examples=None)
    one, three = _protocol_notes(config, 1)[0], _protocol_notes(config, 3)[0]
    assert "n=1" in one and "±" not in one
    assert three.startswith("Each cell: mean ± std over 3 fine-tuning seeds, each at its best of 3 epochs (dev metrics")
    config.epochs = 1
    assert _protocol_notes(config, 3)[0].startswith("Each cell: mean ± std over 3 fine-tuning seeds, each after its "
                                                    "one epoch (dev metrics after every epoch)")


@pytest.mark.parametrize("main, defaults", [
    (lambda argv: suite_main(argv, "glue"), ["--lr LR peak learning rate (default: the paper's, --loss balanced 1e-05, "
                                             "--loss ce 5e-06)", "AdamW weight decay (default: the paper's, --loss "
                                             "balanced 0, --loss ce 0.01)"]),
    (xnli_main, ["--lr LR peak learning rate (default: the paper's, XNLI 2e-05)",
                 "AdamW weight decay (default: the paper's, XNLI 0.01)"]),
])
def test_finetune_help_names_the_paper_defaults_once(capsys, main, defaults):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0 and "(default: None)" not in text
    for default in defaults:
        assert default in text
    assert "--epochs EPOCHS fine-tuning epochs; dev metrics after each, best reported (default: " in text


def test_average_is_per_seed_then_over_seeds():
    columns = {"A": {"accuracy": {"0": 0.5, "1": 0.7}}, "B": {"accuracy": {"0": 0.9, "1": 0.7}},
               "R": {"accuracy": {"0": 0.1, "1": 0.2}}}
    main = {"A": "accuracy", "B": "accuracy", "R": "accuracy"}
    # per seed: (0.5 + 0.9) / 2 = 0.7 and (0.7 + 0.7) / 2 = 0.7 -> 70.00 ± 0.00, not the std of the cells
    assert row_average(columns, ["A", "B"], main) == pytest.approx({"0": 0.7, "1": 0.7})
    table = markdown_table([("m", columns)], ["A", "B", "R"], ["A", "B"], main)
    header, row = markdown_rows(table)
    assert header == ["model", "A", "B", "Avg.", "R"]  # the non-averaged column (RTE) after the average
    assert row == ["m", "60.00 ± 14.14", "80.00 ± 14.14", "70.00 ± 0.00", "15.00 ± 7.07"]
    # a row missing an averaged column gets no average
    table = markdown_table([("m", columns), ("n", {"A": columns["A"]})], ["A", "B"], ["A", "B"], main)
    assert markdown_rows(table)[-1] == ["n", "60.00 ± 14.14", "—", "—"]
