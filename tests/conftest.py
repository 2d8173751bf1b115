"""Shared fixtures: one tiny binarized corpus per test session, the tiny runs trained on it once per session,
and config loading."""

import atexit
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's console scripts (fairseq-preprocess, ...)

# transformers copies a headless export's modeling file (trust_remote_code) into its modules cache, in a folder
# named after the export's folder (~/.cache/huggingface/modules/transformers_modules/hf/...): one cache per test
# session, set before transformers is imported and inherited by the tests' subprocesses, so that suites run at
# the same time never import each other's half-copied file and nothing is left in the user's home.
_HF_MODULES = tempfile.mkdtemp(prefix="hf-modules-")
os.environ["HF_MODULES_CACHE"] = _HF_MODULES
atexit.register(shutil.rmtree, _HF_MODULES, ignore_errors=True)
# Tiny models on a shared 2-core machine: one thread computes them several times cheaper than two (no OpenMP
# threads spinning in each other's way). Set before torch is imported; the tests' subprocesses inherit it.
os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
# the studies (``python -m studies.X``) import from the checkout: their subprocesses find it from any folder
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


def write_markov_corpus(path: Path, lines: int, seed: int, vocab: int = 64) -> None:
    """Sentences from a near-deterministic chain (next word = 5 * word + {0,1} mod vocab):
    predictable enough that 50 updates of a tiny model visibly lower any of the losses."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        word = rng.randrange(vocab)
        words = []
        for _ in range(rng.randint(8, 30)):
            words.append(f"w{word}")
            word = (5 * word + rng.randint(0, 1)) % vocab
        out.append(" ".join(words))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A fairseq data folder binarized by the real `fairseq-preprocess` CLI."""
    root = tmp_path_factory.mktemp("tiny_corpus")
    write_markov_corpus(root / "train.txt", 1500, seed=1)
    write_markov_corpus(root / "valid.txt", 80, seed=2)
    data = root / "bin"
    subprocess.run(
        [str(BIN / "fairseq-preprocess"), "--only-source", "--trainpref", str(root / "train.txt"),
         "--validpref", str(root / "valid.txt"), "--destdir", str(data), "--workers", "1"],
        check=True, capture_output=True,
    )
    return data


@pytest.fixture(scope="session")
def spm_folder(tmp_path_factory) -> Path:
    """A scripts/prepare_data.py folder of the project's docs (helpers.export.corpus_lines): a sentencepiece BPE of
    1000 pieces with byte fallback, as prepare_data trains it."""
    from helpers.export import prepare

    return prepare(tmp_path_factory.mktemp("spm"), "--vocab-size", "1000", "--byte-fallback", "on")


def _trained(tiny_data, tmp_path_factory, config, *overrides):
    from helpers.training import SHORT_SCHEDULE, TrainingRun, hydra_train

    save_dir = tmp_path_factory.mktemp(config)
    overrides = (*overrides, *SHORT_SCHEDULE)
    return TrainingRun(config, tiny_data, overrides, save_dir, hydra_train(config, tiny_data, save_dir, *overrides))


# Session runs of fairseq-hydra-train on tiny_data at SHORT_SCHEDULE's lr (helpers.training.TrainingRun: its log,
# save_dir, and what reruns it), shared by the test files that check a trained model or its log. Each is as short
# as the assertions on it allow; a test that resumes one copies its save_dir first.

@pytest.fixture(scope="session")
def hmlm_tiny_run(tiny_data, tmp_path_factory):
    """The headless encoder: 20 updates, a log line per update, a checkpoint and a validation every 5."""
    return _trained(tiny_data, tmp_path_factory, "hmlm_tiny", "optimization.max_update=20", "common.log_interval=1",
                    "checkpoint.save_interval_updates=5", "checkpoint.keep_interval_updates=1",
                    "dataset.validate_interval_updates=5")


@pytest.fixture(scope="session")
def hlm_tiny_run(tiny_data, tmp_path_factory):
    """The headless GPT-2 decoder: 20 updates, a log line every 2, no validation, one checkpoint at the end."""
    return _trained(tiny_data, tmp_path_factory, "hlm_tiny", "optimization.max_update=20", "common.log_interval=2",
                    "dataset.validate_interval_updates=0", "checkpoint.save_interval_updates=0")


@pytest.fixture(scope="session")
def hlm_pythia_tiny_run(tiny_data, tmp_path_factory):
    """The headless Pythia: 15 updates, a log line every 5, no validation, one checkpoint at the end."""
    return _trained(tiny_data, tmp_path_factory, "hlm_pythia_tiny", "optimization.max_update=15",
                    "common.log_interval=5", "dataset.validate_interval_updates=0",
                    "checkpoint.save_interval_updates=0")


def load_config(name: str, *overrides: str):
    """Compose configs/<name>.yaml exactly as fairseq-hydra-train does (without training)."""
    from studies.benchmarks.steps import compose

    return compose(name, overrides, REPO / "configs")


def build_task_and_model(name: str, data: Path, *overrides: str):
    from fairseq import tasks

    cfg = load_config(name, f"task.data={data}", *overrides)
    task = tasks.setup_task(cfg.task)
    return cfg, task, task.build_model(cfg.model)


def run_cli(args, cwd=REPO, timeout=900):
    """Run a console script of the venv; return its combined output, failing loudly."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [str(BIN / args[0]), *map(str, args[1:])], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def rounding_bound(terms: int, scale: float, dtype=None) -> float:
    """How far apart two different computations of one value may land, in absolute terms.

    A sum of n terms rounded at unit u = eps/2 lies within about n*u*sum|x_i| of the exact sum (Higham,
    Accuracy and Stability of Numerical Algorithms, ch. 3-4), so two computations that sum in other orders
    (another kernel set or thread count, another chunking, two ranks against one process, sparse against
    dense, fairseq against an export) lie within n*eps*sum|x_i| of each other. `terms` is the longest chain
    of roundings behind one value (the longest sum, plus the operations after it); `scale` stands for
    sum|x_i|, usually the largest |value| of the result (a normwise bound); `dtype` is the precision the
    values were computed in (float32 when one side is a float64 reference).
    """
    import torch

    return terms * torch.finfo(dtype or torch.float32).eps * float(scale)


def assert_close_computations(actual, expected, *, terms: int, scale=None, dtype=None, msg=None):
    """assert_close for two different computations of the same tensor, within rounding_bound.

    The precision is the coarser of the two dtypes (a float64 reference checks the float32 result);
    the scale is the largest |expected| unless given. Bit equality is for the same computation repeated.
    """
    import torch

    if dtype is None:
        dtype = min((actual.dtype, expected.dtype), key=lambda d: torch.finfo(d).bits)
    if scale is None:
        scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    bound = rounding_bound(terms, scale, dtype)
    where = f"{msg}: " if msg else ""
    torch.testing.assert_close(
        actual.detach().to(expected.dtype), expected.detach(), rtol=0, atol=bound,
        msg=lambda m: f"{where}{m}\n(rounding bound {bound:.2e} = {terms} x eps({dtype}) x {scale:.2e})")


def network_terms(model, positions: int) -> int:
    """An upper bound on the longest chain of roundings behind one output or parameter gradient of `model`
    on a batch of `positions` tokens: every linear layer's in_features on the way (parallel projections
    each counted), plus a sum over the positions per linear layer (attention, and the backward's sums)."""
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return sum(m.in_features for m in linears) + positions * (1 + len(linears))


def perplexity_rtol(layers: int, dim: int, ffn: int, length: int, vocab: int, perplexity: float) -> float:
    """Relative tolerance of a perplexity computed by two different paths (batched against one passage at a
    time, fairseq against an export): d(ppl)/ppl is the error of the mean log-likelihood, whose longest chain
    of roundings is each layer's FFN (2D + ffn) and attention (T) sums, the head's D, the log-softmax's V."""
    import math

    return rounding_bound(layers * (2 * dim + ffn + length) + dim + vocab, math.log(perplexity))


@pytest.fixture
def one_thread():
    """One torch thread within a test (the session starts with one: OMP_NUM_THREADS above), also after a test
    that changed it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --cpu-times=FILE: user+sys CPU seconds of every test (setup, call and teardown, its subprocesses included),
# most expensive first; the suite's budget is counted this way.
def pytest_addoption(parser):
    parser.addoption("--cpu-times", metavar="FILE", help="write each test's CPU seconds (with children) to FILE")


def _cpu_seconds() -> float:
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


_CPU_TIMES: dict = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = _cpu_seconds()
    yield
    _CPU_TIMES[item.nodeid] = _cpu_seconds() - start


def pytest_sessionfinish(session):
    path = session.config.getoption("--cpu-times")
    if path and _CPU_TIMES:
        rows = sorted(_CPU_TIMES.items(), key=lambda kv: -kv[1])
        lines = [f"{sum(_CPU_TIMES.values()):8.1f}  total"] + [f"{s:8.1f}  {name}" for name, s in rows]
        Path(f"{path}.tmp").write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(f"{path}.tmp", path)
