#!/usr/bin/env python
"""The checks that need a GPU, for a developer who has one (CI and the test suite have none).

    python scripts/gpu_checks.py --data DATA_DIR --output gpu_checks.json

1. the CWT loss on CUDA in fp16 and bf16: finite loss and gradients with dot products of several
   hundred, chunked equal to unchunked;
2. fp16 training (``--updates``, default 300) with fairseq's loss scaling (plain ``common.fp16=true``,
   the paper's setting) of ``hmlm_tiny`` and ``hlm_tiny``: the loss goes down, overflow skips are counted;
3. with 2+ GPUs: a 2-process NCCL run with ``negatives_scope=global``;
4. xformers: whether it imports and runs ``memory_efficient_attention`` here.

DATA_DIR is any folder made by scripts/prepare_data.py (the demo's ``demo_runs/data-*`` will do).
Results go to the JSON file; record them in the issue note.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def check_loss():
    from fairseq_headless.cwt import cwt_loss

    results = {}
    generator = torch.Generator(device="cuda").manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16):
        outputs = (4 * torch.randn(4096, 512, device="cuda", generator=generator)).to(dtype).requires_grad_()
        matrix = (4 * torch.randn(8000, 512, device="cuda", generator=generator)).to(dtype).requires_grad_()
        ids = torch.randint(0, 8000, (4096,), device="cuda", generator=generator)
        full = cwt_loss(outputs, ids, embedding_matrix=matrix)
        full.loss.backward()
        grads = outputs.grad.clone(), matrix.grad.clone()
        outputs.grad = matrix.grad = None
        chunked = cwt_loss(outputs, ids, embedding_matrix=matrix, chunk_size=512)
        chunked.loss.backward()
        results[str(dtype)] = {
            "max_dot_product": float((outputs.float() @ matrix.float().t()).abs().max()),
            "finite": bool(torch.isfinite(full.loss) and torch.isfinite(grads[0]).all() and torch.isfinite(grads[1]).all()),
            "chunked_loss_rel_diff": float(abs(full.loss - chunked.loss) / full.loss),
            "chunked_grad_max_abs_diff": float((grads[0] - outputs.grad).abs().max().float()),
        }
    return results


def train(config, data, save_dir, updates, extra=(), launcher=()):
    from fairseq_headless.experiments.training_runs import hydra_train_command

    command = [*launcher, *hydra_train_command(config, [
               f"task.data={data}", f"checkpoint.save_dir={save_dir}",
               f"optimization.max_update={updates}", f"common.log_interval={max(1, updates // 15)}", "common.fp16=true",
               f"common.user_dir={REPO / 'fairseq_headless'}", *extra])]
    proc = subprocess.run(command, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    losses = [float(x) for x in re.findall(r"train_inner.*? loss=([\d.]+)", log)]
    return {
        "returncode": proc.returncode,
        "first_losses": losses[:3],
        "last_losses": losses[-3:],
        "overflow_skips": len(re.findall(r"overflow detected", log)),
        "loss_scales": sorted(set(re.findall(r"loss_scale=([\d.]+)", log))),
        "tail": log[-1500:] if proc.returncode else "",
    }


def check_xformers():
    try:
        import xformers.ops as xops
    except ImportError as error:
        return {"installed": False, "error": str(error)}
    q = torch.randn(2, 128, 8, 64, device="cuda", dtype=torch.float16)
    out = xops.memory_efficient_attention(q, q, q)
    reference = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, q, q))).transpose(1, 2)
    return {"installed": True, "max_abs_diff_vs_sdpa": float((out - reference).abs().max())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a data folder made by scripts/prepare_data.py")
    parser.add_argument("--output", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument("--workdir", type=Path, default=Path("gpu_checks_runs"))
    parser.add_argument("--updates", type=int, default=300, help="updates per fp16 training check (default 300)")
    args = parser.parse_args(argv)
    if args.updates <= 0:
        parser.error(f"--updates {args.updates}: give a positive number of updates")
    if not torch.cuda.is_available():
        parser.error("no CUDA device here: run this on a GPU machine")
    from fairseq_headless.data.errors import DataError
    from fairseq_headless.data.folder import open_data_folder

    try:
        open_data_folder(args.data, f"--data {args.data}", need_tokenizer=False).require_dictionary(f"--data {args.data}")
    except DataError as e:
        parser.error(str(e))

    results = {"device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
               "torch": torch.__version__, "fp16_updates": args.updates, "loss": check_loss()}
    print(json.dumps(results["loss"], indent=2), flush=True)
    for config in ("hmlm_tiny", "hlm_tiny"):
        results[f"fp16_{config}"] = train(config, args.data, args.workdir / config, args.updates)
        print(config, json.dumps(results[f"fp16_{config}"]), flush=True)
    if torch.cuda.device_count() >= 2:
        results["nccl_2gpu_global"] = train(
            "hmlm_tiny", args.data, args.workdir / "nccl", args.updates,
            extra=["distributed_training.distributed_world_size=2", "distributed_training.distributed_init_method=env://",
                   "distributed_training.distributed_no_spawn=true", "criterion.negatives_scope=global",
                   "distributed_training.distributed_rank=${oc.env:RANK}"],
            launcher=[str(BIN / "torchrun"), "--nproc_per_node=2"],
        )
    results["xformers"] = check_xformers()
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
