"""The checks that need a GPU, in one short call on one GPU (CI and the test suite have none).

    python -m studies.gpu_checks --data demo_runs/data-sotu-8000 --corpus demo_runs/sotu --output gpu_checks.json

``loss``: the CWT loss in fp16 and bf16 on CUDA (finite, chunked = unchunked); ``fp16_*``: fp16 training
with fairseq's loss scaling, dense and sparse embedding update; ``nccl_1rank_sparse_hook``: fairseq-hydra-train
under torchrun on NCCL with the sparse all-reduce hook, its Trainer made to wrap a world of one in DDP (2+
GPUs: ``nccl_2gpu_global_sparse`` too); ``demo_small``: RESULTS.md's demo command; ``xformers``. The JSON is
rewritten after every check. ``--cpu-dry-run`` runs the same code on a CPU (tiny sizes, fp32, gloo).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fairseq_headless.cli import Parser
from fairseq_headless.files import write_json_atomic
from .training_runs import (CPU_OVERRIDES, REPO, hydra_train_command, last_update, merge_overrides, read_log, records,
                            run_training, study_command)

logger = logging.getLogger(__name__)
BIN = Path(sys.executable).parent
# torchrun starts the script, which runs the installed package (also in the torchrun child)
ONE_RANK_DDP = "--as-one-rank-ddp-fairseq-hydra-train"  # the torchrun child of check 4
HOOK_REGISTERED = "DDP all-reduces them through the sparse all-reduce hook"
HOOK_CALL = re.compile(r"sparse all-reduce hook: call (\d+), path (\w+), rows per rank \[([\d, ]+)\], "
                       r"V x D = (\d+) x (\d+), bytes received: gather ([\d,]+), dense ([\d,]+)")
# RESULTS.md's hmlm_small vs mlm_small command, less its --workdir and --corpus
DEMO_SMALL = ["--size", "small", "--max-update", "1000",
              "--train-override", "optimization.lr=[5e-4]", "--train-override", "lr_scheduler.warmup_updates=100",
              "--train-override", "common.log_interval=50",
              "--downstream-seeds", "2", "--downstream-train-per-era", "500", "--downstream-dev-per-era", "300"]


@dataclass(frozen=True)
class Mode:
    """What differs between the GPU run and its CPU dry run: nothing but the hardware's settings."""

    device: str
    fp16: tuple  # the paper's fp16 (fairseq's FP16Optimizer and loss scaling)
    sparse_fp16: tuple  # fp16 with the sparse update: the memory-efficient wrapper
    backend: str
    loss_shape: tuple  # (positions, vocabulary, dim) of the loss check
    loss_dtypes: tuple
    demo: tuple  # studies/demo.py's size and downstream arguments


GPU = Mode("cuda", ("common.fp16=true",), ("common.fp16=true", "common.memory_efficient_fp16=true"), "nccl",
           (4096, 8000, 512), ("float16", "bfloat16"), tuple(DEMO_SMALL))


def cpu_dry_run(vocab_size):
    return Mode("cpu", tuple(CPU_OVERRIDES), tuple(CPU_OVERRIDES), "gloo", (64, 100, 32), ("bfloat16",),
                ("--size", "tiny", "--max-update", "10", "--vocab-size", str(vocab_size),
                 "--train-override", "common.log_interval=5", "--downstream-seeds", "1",
                 "--downstream-train-per-era", "12", "--downstream-dev-per-era", "4"))


def check_loss(mode):
    from fairseq_headless.cwt import cwt_loss

    results = {}
    positions, vocab, dim = mode.loss_shape
    generator = torch.Generator(device=mode.device).manual_seed(0)
    for name in mode.loss_dtypes:
        dtype = getattr(torch, name)
        outputs = (4 * torch.randn(positions, dim, device=mode.device, generator=generator)).to(dtype).requires_grad_()
        matrix = (4 * torch.randn(vocab, dim, device=mode.device, generator=generator)).to(dtype).requires_grad_()
        ids = torch.randint(0, vocab, (positions,), device=mode.device, generator=generator)
        full = cwt_loss(outputs, ids, embedding_matrix=matrix)
        full.loss.backward()
        grads = outputs.grad.clone(), matrix.grad.clone()
        outputs.grad = matrix.grad = None
        chunked = cwt_loss(outputs, ids, embedding_matrix=matrix, chunk_size=max(1, positions // 8))
        chunked.loss.backward()
        results[str(dtype)] = {
            "max_dot_product": float((outputs.float() @ matrix.float().t()).abs().max()),
            "finite": bool(torch.isfinite(full.loss) and torch.isfinite(grads[0]).all() and torch.isfinite(grads[1]).all()),
            "chunked_loss_rel_diff": float(abs(full.loss - chunked.loss).detach() / full.loss.detach()),
            "chunked_grad_max_abs_diff": float((grads[0] - outputs.grad).abs().max().float()),
        }
    results["ok"] = all(r["finite"] for r in results.values())
    return results


def train(config, data, save_dir, updates, overrides=(), launcher=(), timeout=300):
    """One fairseq-hydra-train run (``launcher``: e.g. torchrun); its losses, fp16 meters and log tail."""
    command = [*launcher, *hydra_train_command(config, merge_overrides([
               f"task.data={data}", f"checkpoint.save_dir={save_dir}", f"optimization.max_update={updates}",
               f"common.log_interval={max(1, updates // 15)}", f"common.user_dir={REPO / 'fairseq_headless'}",
               "checkpoint.no_save=true"], overrides))]
    finished = run_training(command, Path(save_dir) / "train.log", config, report=None, timeout=timeout, check=False)
    launches = read_log(finished.output)
    inner = records(launches, "train_inner")
    losses = [float(r["loss"]) for r in inner if "loss" in r]
    returncode = finished.returncode
    result = {"command": shlex.join(map(str, command)), "returncode": returncode, "updates": last_update(launches) or 0,
              "first_losses": losses[:3], "loss_went_down": bool(losses) and losses[-1] < losses[0],
              "last_losses": losses[-3:], "overflow_skips": sum(launch.overflow_skips for launch in launches),
              "loss_scales": sorted({str(r["loss_scale"]) for r in inner if "loss_scale" in r}),
              "tail": finished.output[-1500:] if returncode else ""}
    result["ok"] = returncode == 0 and result["updates"] == updates and bool(losses)
    return result, finished.output


def hook_calls(log):
    """The sparse all-reduce hook's logged calls (fairseq logs INFO on rank 0 only)."""
    return [{"call": int(m[1]), "path": m[2], "rows_per_rank": [int(x) for x in m[3].split(",")], "vocab": int(m[4]),
             "dim": int(m[5]), "gather_bytes": int(m[6].replace(",", "")), "dense_bytes": int(m[7].replace(",", ""))}
            for m in HOOK_CALL.finditer(log)]


def check_ddp_hook(mode, data, workdir, updates, world_size):
    """fairseq-hydra-train under torchrun with the sparse update: the hook must run at every update."""
    from fairseq_headless.sparse_embedding import OVERRIDES as SPARSE_UPDATE  # here: the torchrun child must import fairseq first
    with socket.socket() as s:  # a free port: other runs may share this machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [str(BIN / "torchrun"), f"--nproc_per_node={world_size}", f"--master_port={port}"]
    if world_size == 1:  # the child below: fairseq-hydra-train with DDP around a world of one
        launcher = [*torchrun, "-m", "studies.gpu_checks", ONE_RANK_DDP]
        config, extra = "hlm_tiny", []
    else:
        launcher, config, extra = torchrun, "hmlm_tiny", ["criterion.negatives_scope=global"]
    distributed = {"distributed_world_size": world_size, "distributed_backend": mode.backend,
                   "ddp_backend": "pytorch_ddp", "distributed_init_method": "env://", "distributed_no_spawn": "true",
                   "distributed_rank": "${oc.env:RANK}"}
    result, log = train(config, data, workdir, updates, launcher=launcher, overrides=[
        *mode.sparse_fp16, *(f"distributed_training.{k}={v}" for k, v in distributed.items()), *SPARSE_UPDATE, *extra])
    calls = hook_calls(log)
    # calls 1, 2, 4, ... are logged; fp16 steps skipped for an overflow call the hook too but are no update,
    # so there may be more calls than updates, never fewer
    expected = [2**k for k in range(updates.bit_length())]
    logged = [c["call"] for c in calls]
    result.update(hook_registered=HOOK_REGISTERED in log, hook_calls=calls,
                  hook_ran=logged[:len(expected)] == expected and logged == [2**k for k in range(len(logged))],
                  hook_paths=sorted({c["path"] for c in calls}))
    result["ok"] = result["ok"] and result["hook_registered"] and result["hook_ran"]
    if world_size == 1:  # both paths, alternated by the child
        result["ok"] = result["ok"] and result["hook_paths"] == ["dense", "gather"]
    return result


def one_rank_ddp_fairseq_hydra_train(command):
    """A fairseq-hydra-train command line (its console script, then its arguments) run in this process by
    fairseq's own entry point, fairseq_cli.hydra_train.cli_main, with a Trainer that wraps a world of one in DDP.

    With one rank the hook's byte count makes it densify at every call (a one-rank all-reduce moves nothing):
    here its two paths alternate instead (odd calls gather, even calls densify), so that both run on NCCL."""
    from fairseq.trainer import Trainer
    from fairseq_cli.hydra_train import cli_main

    import fairseq_headless.plugin  # noqa: F401  (lazy_adam and the models, before hydra composes the config)

    from fairseq_headless import sparse_all_reduce

    calls = itertools.count(1)
    sparse_all_reduce.choose_path = lambda *_: "gather" if next(calls) % 2 else "dense"
    Trainer.use_distributed_wrapper = property(lambda self: True)
    sys.argv = list(command)
    cli_main()
    return 0


def check_demo(mode, corpus, workdir, timeout):
    """studies/demo.py's headless vs vanilla run at equal tokens, with its downstream check; the comparison."""
    before = set(workdir.glob("run-*")) if workdir.exists() else set()
    command = [*study_command("demo"), "--workdir", str(workdir), "--corpus", str(corpus), *mode.demo]
    finished = run_training(command, workdir / "demo.out", "demo", report=None, timeout=timeout, check=False)
    returncode, log = finished.returncode, finished.output
    result = {"command": shlex.join(command), "returncode": returncode, "tail": log[-2000:] if returncode else ""}
    runs = sorted(set(workdir.glob("run-*")) - before)
    if returncode or not runs or not (runs[-1] / "results.json").exists():
        result["ok"] = False
        return result
    summary = json.loads((runs[-1] / "results.json").read_text())
    keys = ("config", "updates", "tokens_seen", "updates_per_s", "final_valid_loss_bits", "masked_top1_accuracy")
    models = {name: {k: r[k] for k in keys} | {"export_max_abs_diff": r["export"]["max_abs_diff"]}
              for name, r in summary["results"].items()}
    downstream = {}
    for path in sorted((runs[-1] / "downstream").glob("*/SOTU-era.json")):
        job = json.loads(path.read_text())
        downstream[job["model"]] = {"dev_accuracy_per_seed": job["columns"]["SOTU-era"]["accuracy"],
                                    "mean_std": job["mean_std"]["SOTU-era"]["accuracy"]}
    result.update(run_dir=str(runs[-1]), device=summary["device"], models=models, downstream=downstream,
                  equal_tokens=models["headless"]["tokens_seen"] == models["vanilla"]["tokens_seen"],
                  wall_s_demo=summary["wall_s"])
    result["ok"] = result["equal_tokens"] and {"headless", "vanilla", "random-init"} <= set(downstream)
    return result


def check_xformers():
    try:
        import xformers.ops as xops
    except ImportError as error:
        return {"installed": False, "error": str(error)}
    q = torch.randn(2, 128, 8, 64, device="cuda", dtype=torch.float16)
    out = xops.memory_efficient_attention(q, q, q)
    reference = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, q, q))).transpose(1, 2)
    return {"installed": True, "max_abs_diff_vs_sdpa": float((out - reference).abs().max())}


def parse_args(argv):
    parser = Parser(prog="python -m studies.gpu_checks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a data folder made by scripts/prepare_data.py")
    parser.add_argument("--output", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument("--corpus", type=Path, help="the SOTU folder (scripts/fetch_corpus.py) for the demo check; "
                                                    "without it the demo is skipped")
    parser.add_argument("--workdir", type=Path, default=Path("gpu_checks_runs"))
    parser.add_argument("--updates", type=int, default=100, help="updates per training check (default 100)")
    parser.add_argument("--demo-timeout", type=int, default=420, help="seconds the demo check may take (default 420)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="the same checks on a CPU with tiny sizes, fp32 and gloo (the test suite's run)")
    parser.add_argument("--vocab-size", type=int, default=150, help="the dry run's demo vocabulary (default 150)")
    args = parser.parse_args(argv)
    if args.updates <= 0:
        parser.error(f"--updates {args.updates}: give a positive number of updates")
    if not args.cpu_dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here: run this on a GPU machine (or give --cpu-dry-run)")
    from fairseq_headless.data.folder import open_data_folder

    open_data_folder(args.data, f"--data {args.data}", need_tokenizer=False).require_dictionary(f"--data {args.data}")
    if args.corpus is not None and not args.corpus.is_dir():
        parser.error(f"--corpus {args.corpus} is not a folder; give the SOTU folder of scripts/fetch_corpus.py")
    return args


def run_checks(args, mode, results: dict) -> None:
    """Every check in turn, the JSON rewritten after each one (a call stopped at its limit keeps what ran)."""
    gpus = results["gpus"]

    def record(name, check):
        started = time.time()
        try:
            results[name] = check()
        except Exception as error:  # device time is scarce: one failing check must not cost the others
            results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"[-4000:]}
        results[name]["wall_s"] = round(time.time() - started, 1)
        write_json_atomic(args.output, results)
        logger.info(f"[gpu_checks] {name}: ok={results[name].get('ok')} ({results[name]['wall_s']} s)")

    record("loss", lambda: check_loss(mode))
    from fairseq_headless.sparse_embedding import OVERRIDES as SPARSE_UPDATE

    for name, config, overrides in (("hmlm_tiny", "hmlm_tiny", mode.fp16), ("hlm_tiny", "hlm_tiny", mode.fp16),
                                    ("sparse_hmlm_tiny", "hmlm_tiny", [*mode.sparse_fp16, *SPARSE_UPDATE])):
        record(f"fp16_{name}", lambda: train(config, args.data, args.workdir / name, args.updates, overrides)[0])
    for world, name in ((1, "nccl_1rank_sparse_hook"), (2, "nccl_2gpu_global_sparse"))[:2 if gpus >= 2 else 1]:
        record(name, lambda: check_ddp_hook(mode, args.data, args.workdir / f"ddp{world}", args.updates, world))
    if args.corpus is not None:
        record("demo_small", lambda: check_demo(mode, args.corpus.resolve(), args.workdir / "demo", args.demo_timeout))
    record("xformers", check_xformers if gpus else (lambda: {"skipped": "no CUDA device (--cpu-dry-run)"}))


def main(argv=None) -> int:
    """0 when every check passed, 1 when one failed."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [ONE_RANK_DDP]:
        return one_rank_ddp_fairseq_hydra_train(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logger.setLevel(logging.INFO)
    mode = cpu_dry_run(args.vocab_size) if args.cpu_dry_run else GPU
    gpus = torch.cuda.device_count() if mode.device == "cuda" else 0
    results = {"device": torch.cuda.get_device_name(0) if gpus else "cpu (--cpu-dry-run)", "gpus": gpus,
               "torch": torch.__version__, "mode": mode.device, "updates": args.updates,
               "command": shlex.join(["python", "-m", "studies.gpu_checks", *argv])}
    run_checks(args, mode, results)
    results["ok"] = all(r.get("ok", True) for r in results.values() if isinstance(r, dict))
    write_json_atomic(args.output, results)
    print(f"wrote {args.output}" + ("" if results["ok"] else ": some check failed, see its \"error\" or \"ok\""))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    from fairseq_headless.cli import run as run_command

    sys.exit(run_command(main))
