"""The CWT loss against a float64 reference written from its definition (paper §3.2)."""

import math

import pytest
import torch

from conftest import assert_close_computations, rounding_bound
from fairseq_headless.cwt import cwt_loss
from helpers.references import reference_cwt


def loss_terms(num_positions, dim):
    """Roundings behind one loss term or gradient element: a dot product of `dim` terms, a logsumexp
    (or softmax-weighted sum) over at most `num_positions` columns, and a sum over positions."""
    return dim + 2 * num_positions + 4


def make_inputs(seed, num_positions=37, dim=16, vocab=11, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    outputs = torch.randn(num_positions, dim, generator=generator, dtype=dtype)
    matrix = torch.randn(vocab, dim, generator=generator, dtype=dtype)
    # few distinct ids so that `batch` and `unique` differ
    target_ids = torch.randint(0, vocab, (num_positions,), generator=generator)
    return outputs, target_ids, matrix


@pytest.mark.parametrize("negatives", ["batch", "unique"])
@pytest.mark.parametrize("chunk_size", [0, 5, 36, 100])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_loss_and_accuracy_match_reference(negatives, chunk_size, temperature):
    outputs, target_ids, matrix = make_inputs(seed=chunk_size + int(temperature * 10) + len(negatives))
    expected, expected_correct = reference_cwt(outputs, target_ids, matrix, negatives, temperature)
    result = cwt_loss(
        outputs, target_ids, embedding_matrix=matrix,
        negatives=negatives, temperature=temperature, chunk_size=chunk_size,
    )
    assert result.loss.dtype == torch.float32
    # every term lse_i - o_i.e_i is >= 0, so the loss itself is the sum of the magnitudes
    assert result.loss.item() == pytest.approx(expected, abs=rounding_bound(loss_terms(37, 16), expected))
    assert result.correct.item() == expected_correct
    assert result.num_positions == 37
    assert result.num_negatives == (37 if negatives == "batch" else len(set(target_ids.tolist())))


def _gradients(fn, outputs, matrix, target_ids):
    outputs = outputs.clone().requires_grad_(True)
    matrix = matrix.clone().requires_grad_(True)
    fn(outputs, matrix, target_ids).backward()
    return outputs.grad, matrix.grad


@pytest.mark.parametrize("negatives", ["batch", "unique"])
@pytest.mark.parametrize("chunk_size", [0, 7])
def test_gradients_match_float64_autograd_reference(negatives, chunk_size):
    outputs, target_ids, matrix = make_inputs(seed=3)

    def reference(o, m, ids):  # the definition, in float64, through autograd
        columns = ids if negatives == "batch" else torch.unique(ids)
        logits = o.double() @ m.double()[columns].t()
        positive = (o.double() * m.double()[ids]).sum(-1)
        return (torch.logsumexp(logits, -1) - positive).sum()

    def ours(o, m, ids):
        return cwt_loss(o, ids, embedding_matrix=m, negatives=negatives, chunk_size=chunk_size).loss

    expected = _gradients(reference, outputs, matrix, target_ids)
    got = _gradients(ours, outputs, matrix, target_ids)
    for g, e in zip(got, expected):
        assert_close_computations(g, e, terms=loss_terms(37, 16))


@pytest.mark.parametrize("negatives", ["batch", "unique"])
def test_target_embeddings_and_embedding_matrix_give_the_same_loss_and_gradient(negatives):
    outputs, target_ids, matrix = make_inputs(seed=5)
    via_rows = _gradients(
        lambda o, m, ids: cwt_loss(o, ids, m[ids], negatives=negatives).loss, outputs, matrix, target_ids
    )
    via_matrix = _gradients(
        lambda o, m, ids: cwt_loss(o, ids, embedding_matrix=m, negatives=negatives).loss,
        outputs, matrix, target_ids,
    )
    for a, b in zip(via_rows, via_matrix):  # gathered rows and a looked-up matrix: other kernels, same sums
        assert_close_computations(a, b, terms=loss_terms(37, 16))


def test_chunked_equals_unchunked_on_a_larger_batch():
    outputs, target_ids, matrix = make_inputs(seed=9, num_positions=513, dim=32, vocab=300)
    full = _gradients(lambda o, m, ids: cwt_loss(o, ids, embedding_matrix=m).loss, outputs, matrix, target_ids)
    chunked = _gradients(
        lambda o, m, ids: cwt_loss(o, ids, embedding_matrix=m, chunk_size=64).loss, outputs, matrix, target_ids
    )
    for a, b in zip(full, chunked):
        assert_close_computations(a, b, terms=loss_terms(513, 32))


def test_paper_reference_formula_agrees_where_it_does_not_overflow():
    """App. G's `-(exp(mm).diag / exp(mm).sum).log().mean()` is our loss / K (batch negatives)."""
    outputs, target_ids, matrix = make_inputs(seed=11)
    targets = matrix[target_ids]
    similarity = torch.exp(outputs.double() @ targets.double().t())
    paper = -(similarity.diagonal() / (similarity.sum(-1) + 1e-9)).log().mean()
    ours = cwt_loss(outputs, target_ids, targets).loss / outputs.size(0)
    assert ours.item() == pytest.approx(paper.item(), abs=rounding_bound(loss_terms(37, 16), paper.item()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [0, 8])
@pytest.mark.parametrize("negatives", ["batch", "unique"])
def test_half_precision_with_large_dot_products_is_finite(dtype, chunk_size, negatives):
    outputs, target_ids, matrix = make_inputs(seed=13, num_positions=64, dim=64, vocab=20)
    # scale so that dot products reach several hundred (fp32 exp() overflows past ~88)
    outputs = (outputs * 4).to(dtype).requires_grad_(True)
    matrix = (matrix * 4).to(dtype).requires_grad_(True)
    assert (outputs.float() @ matrix.float().t()).abs().max() > 100
    result = cwt_loss(outputs, target_ids, embedding_matrix=matrix, negatives=negatives, chunk_size=chunk_size)
    result.loss.backward()
    assert torch.isfinite(result.loss)
    assert torch.isfinite(outputs.grad).all() and torch.isfinite(matrix.grad).all()
    # and close to the fp64 value of the same (rounded) inputs. The logits are stored in the inputs' dtype:
    # one rounding of each, so lse_i - o_i.e_i is off by about two roundings of position i's largest |logit|
    expected, _ = reference_cwt(outputs.detach(), target_ids, matrix.detach(), negatives, 1.0)
    largest = (outputs.detach().double() @ matrix.detach().double().t()).abs().max(dim=1).values.sum().item()
    assert result.loss.item() == pytest.approx(expected, abs=rounding_bound(2, largest, dtype))


def test_no_selected_position_gives_zero_loss_and_a_connected_graph():
    outputs = torch.randn(0, 8, requires_grad=True)
    matrix = torch.randn(5, 8, requires_grad=True)
    result = cwt_loss(outputs, torch.zeros(0, dtype=torch.long), embedding_matrix=matrix)
    assert result.loss.item() == 0.0 and result.num_positions == 0
    result.loss.backward()  # no error: the zero is attached to the graph


@pytest.mark.parametrize("negatives", ["batch", "unique"])
def test_degenerate_batches(negatives):
    matrix = torch.randn(5, 8)
    # a single position: the only negative is itself, the loss is exactly 0
    # (each term is lse_i - s_i with s_i = o_i.e_i: a few roundings of |s_i| + log K apart from the exact value)
    outputs = torch.randn(1, 8)
    one = cwt_loss(outputs, torch.tensor([3]), embedding_matrix=matrix, negatives=negatives)
    scale = (outputs @ matrix[3]).abs().sum().item()
    assert one.loss.item() == pytest.approx(0.0, abs=rounding_bound(loss_terms(1, 8), scale))
    assert one.correct.item() == 1
    # all positions the same token: batch has K identical columns -> loss = K log K; unique -> 0
    outputs = torch.randn(6, 8)
    same = cwt_loss(outputs, torch.full((6,), 2), embedding_matrix=matrix, negatives=negatives)
    expected = 6 * math.log(6) if negatives == "batch" else 0.0
    scale = ((outputs @ matrix[2]).abs() + math.log(6)).sum().item()
    assert same.loss.item() == pytest.approx(expected, abs=rounding_bound(loss_terms(6, 8), scale))
    assert same.correct.item() == 6


def test_bad_arguments_are_refused():
    outputs, target_ids, matrix = make_inputs(seed=1)
    with pytest.raises(ValueError, match="negatives"):
        cwt_loss(outputs, target_ids, embedding_matrix=matrix, negatives="global")
    with pytest.raises(ValueError, match="exactly one"):
        cwt_loss(outputs, target_ids)
    with pytest.raises(ValueError, match="temperature"):
        cwt_loss(outputs, target_ids, embedding_matrix=matrix, temperature=0)


def test_the_loss_module_imports_nothing_from_fairseq(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / "fairseq_headless" / "cwt.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('cwt', {str(source)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'fairseq'], 'fairseq imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
