#!/usr/bin/env python
"""Headless against vanilla training steps of Hugging Face models, through fairseq_headless.hf.objective (§3.4).

    python -m studies.benchmarks.hf_speed --output bench-hf/                          # every shape (hours on 2 CPU cores)
    python -m studies.benchmarks.hf_speed --shapes pythia_70m --output bench-hf/      # one shape, both vocabularies
    python -m studies.benchmarks.hf_speed --quick --output /tmp/bench-hf              # toy sizes, seconds (the test's run)

One group is a shape at one vocabulary size, run in a forked child process. Both models are built there
from a transformers config: the vanilla one as the shape is published (Pythia's head untied), the headless
one with its head tied to the input embeddings (its vocabulary scores are e^T; no head parameter of its own).
A step is forward, backward and AdamW over every parameter (what the Trainer does); the vanilla loss
computes its head at the scored positions only (MLM: 15% of the tokens, masked as fairseq masks; CLM: every
next token). Two untimed steps per model (the first creates AdamW's state, the second measures peak memory:
parameters, buffers and optimizer state, plus the step's peak extra resident memory); then the timed steps
alternate between the models, and each time is the median. ``flop_limit`` is (body + vanilla head) /
(body + CWT) in matrix-product FLOPs, computed from the shape. JSON and a markdown table go to --output.
"""
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from fairseq_headless.cli import InputError, Parser, run, write_line

# name: (family, transformers config fields, vocabularies, (rows, length), task, target)
# A target is ("speedup", x): the measured speed-up is at least x; ("limit", f): at least f x the FLOP limit;
# None: reported as measured.
SHAPES = {
    "pythia_70m": ("gpt_neox", dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                                    intermediate_size=2048, rotary_pct=0.25, tie_word_embeddings=False,
                                    use_parallel_residual=True, hidden_act="gelu", max_position_embeddings=2048),
                   {50304: ("speedup", 2.2), 128256: ("speedup", 4.0)}, (4, 512), "clm"),
    "smollm2_135m": ("llama", dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                   num_key_value_heads=3, intermediate_size=1536, tie_word_embeddings=True,
                                   max_position_embeddings=2048),
                     {49152: ("limit", 0.9), 128256: ("limit", 0.9)}, (4, 512), "clm"),
    "bert_base": ("bert", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072, max_position_embeddings=512),
                  {30522: ("limit", 0.9)}, (8, 512), "mlm"),
    "modernbert_base": ("modernbert", dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                                           intermediate_size=1152),
                        {50368: None}, (32, 128), "mlm"),
}
# --quick: every family at toy sizes (the same code paths, seconds on a CPU); targets do not apply
QUICK = {
    "pythia_70m": (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
                   (2000, 8000), (2, 64)),
    "smollm2_135m": (dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                          intermediate_size=128), (2000, 8000), (2, 64)),
    "bert_base": (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
                  (2000,), (4, 64)),
    "modernbert_base": (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96),
                        (2000,), (8, 32)),
}
CAUSAL = ("gpt_neox", "llama")
MASK_PROB = 0.15


def parse_args(argv):
    parser = Parser(description=__doc__.split("\n")[0], epilog="Writes OUTPUT/benchmark_hf.json and .md.")
    parser.add_argument("--output", type=Path, required=True, help="folder for benchmark_hf.json and benchmark_hf.md")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), metavar="SHAPE",
                        help=f"shapes to run, each at its vocabularies (default: all of {', '.join(SHAPES)})")
    parser.add_argument("--vocab-sizes", nargs="+", type=int, default=None, metavar="V",
                        help="only these of the shapes' vocabularies (default: every one of each shape)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model and group (default 5)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's own choice; on a shared machine, 1 keeps a busy "
                             "neighbour from stalling every parallel region)")
    parser.add_argument("--quick", action="store_true",
                        help="toy sizes of every family, 3 timed steps, 1 thread: a smoke test, no target applies")
    args = parser.parse_args(argv)
    unknown = [s for s in args.shapes if s not in SHAPES]
    if unknown:
        raise InputError(f"--shapes: unknown {', '.join(unknown)}; choose among {', '.join(SHAPES)}")
    if args.vocab_sizes and not args.quick:
        offered = {v for name in args.shapes for v in SHAPES[name][2]}
        if not set(args.vocab_sizes) & offered:
            raise InputError(f"--vocab-sizes: none of {args.vocab_sizes} is a vocabulary of the shapes chosen "
                             f"(they have {', '.join(map(str, sorted(offered)))})")
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if args.output.exists() and not args.output.is_dir():
        raise InputError(f"--output {args.output} is a file; give a folder")
    if args.threads < 0:
        raise InputError(f"--threads must be at least 1 (or 0: torch's default), got {args.threads}")
    if args.quick:
        args.steps, args.threads = 3, args.threads or 1
    return args


def groups(args):
    """One dict per (shape, vocabulary) to run."""
    out = []
    for name in args.shapes:
        family, fields, vocabs, (rows, length), task = SHAPES[name]
        if args.quick:
            small, quick_vocabs, (rows, length) = QUICK[name]
            fields = {**fields, **small, "max_position_embeddings": max(length, 64)}
            vocabs = {v: None for v in quick_vocabs}
        for vocab, target in vocabs.items():
            if args.vocab_sizes and not args.quick and vocab not in args.vocab_sizes:
                continue
            out.append(dict(shape=name, family=family, fields=fields, vocab=vocab, rows=rows, length=length,
                            task=task, target=target))
    return out


def build(family, fields, vocab, tied):
    import transformers as T

    config_class, model_class = {
        "gpt_neox": (T.GPTNeoXConfig, T.GPTNeoXForCausalLM), "llama": (T.LlamaConfig, T.LlamaForCausalLM),
        "bert": (T.BertConfig, T.BertForMaskedLM), "modernbert": (T.ModernBertConfig, T.ModernBertForMaskedLM),
    }[family]
    ids = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)
    if family == "modernbert":
        ids.update(cls_token_id=0, sep_token_id=2)
    config = config_class(**{**fields, "tie_word_embeddings": tied}, vocab_size=vocab, **ids)
    return model_class(config)


def make_batch(group, seed=0):
    """Random tokens (speed does not depend on the text): (input_ids, attention_mask, labels)."""
    import torch

    from fairseq_headless.hf.objective import IGNORE, mask_tokens

    generator = torch.Generator().manual_seed(seed)
    rows, length, vocab = group["rows"], group["length"], group["vocab"]
    ids = torch.randint(4, vocab, (rows, length), generator=generator)
    attention_mask = torch.ones_like(ids)
    if group["task"] == "clm":
        labels = torch.cat([ids[:, 1:], torch.full((rows, 1), IGNORE)], dim=1)
        return ids, attention_mask, labels
    inputs, labels = mask_tokens(ids, torch.zeros_like(ids, dtype=torch.bool), mask_id=3, vocab_size=vocab,
                                 prob=MASK_PROB, generator=generator, special_ids=(0, 1, 2))
    return inputs, attention_mask, labels


def flops(group, positions):
    """Matrix-product FLOPs of one training step (forward + backward = 3 x forward = 6 per multiply-add x
    weight x token): (body, vanilla head, CWT). Attention's two products count T^2 per row, half of it for
    causal models (their kernels skip the masked blocks); the embedding lookup, norms and AdamW, which
    are not matrix products, are left out."""
    f, family = group["fields"], group["family"]
    dim, layers, heads = f["hidden_size"], f["num_hidden_layers"], f["num_attention_heads"]
    kv_heads, head_dim = f.get("num_key_value_heads", heads), dim // heads
    attention_weights = 2 * dim * heads * head_dim + 2 * dim * kv_heads * head_dim  # q, o; k, v
    gated = family in ("llama", "modernbert")  # SwiGLU / GeGLU: two input projections
    ffn_weights = (3 if gated else 2) * dim * f["intermediate_size"]
    rows, length = group["rows"], group["length"]
    tokens = rows * length
    attention = 12 * rows * length * length * dim * layers * (0.5 if family in CAUSAL else 1.0)
    body = 6 * layers * (attention_weights + ffn_weights) * tokens + attention
    transform = 6 * positions * dim * dim if family in ("bert", "modernbert") else 0  # MLM heads' dense layer
    head = 6 * positions * dim * group["vocab"] + transform
    cwt = 6 * positions * positions * dim  # `batch` negatives: K x K logits
    return body, head, cwt


def run_group(group, steps):
    """In a forked child: both models, two untimed steps each, then ``steps`` timed steps alternating."""
    import torch

    from studies.benchmarks.machine import PeakMemory, tensor_mb
    from fairseq_headless.hf.objective import headless_loss, vanilla_loss

    objectives = {"vanilla": vanilla_loss, "headless": headless_loss}
    inputs = make_batch(group)
    models, optimizers = {}, {}
    for name in objectives:
        torch.manual_seed(0)
        tied = True if name == "headless" else group["fields"].get("tie_word_embeddings", True)
        models[name] = build(group["family"], group["fields"], group["vocab"], tied).train()
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-5)

    def step(name):
        model, optimizer = models[name], optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss, positions = objectives[name](model, *inputs)
        (loss / max(positions, 1)).backward()
        optimizer.step()
        return positions

    result = {}
    for name in objectives:
        positions = step(name)  # creates AdamW's state
        model, optimizer = models[name], optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        state = [t for s in optimizer.state.values() for t in s.values()]
        persistent = tensor_mb([*model.parameters(), *model.buffers(), *state])
        with PeakMemory(torch.device("cpu")) as meter:
            step(name)
        result[name] = {"positions": positions, "persistent_mb": round(persistent, 1),
                        "step_extra_mb": None if meter.extra_mb is None else round(meter.extra_mb, 1),
                        "parameters": sum(p.numel() for p in model.parameters()), "times_s": []}
        write_line(f"{group['shape']} V={group['vocab']} {name}: warm, {persistent:.0f} MB persistent")
    order = list(objectives)
    for repeat in range(steps):
        for name in order if repeat % 2 == 0 else order[::-1]:  # a drift of the machine hits both alike
            started = time.perf_counter()
            step(name)
            result[name]["times_s"].append(round(time.perf_counter() - started, 4))
        write_line(f"{group['shape']} V={group['vocab']} step {repeat + 1}/{steps}: "
               + ", ".join(f"{n} {result[n]['times_s'][-1]:.2f} s" for n in order))
    return result


def summarize(group, measured):
    vanilla, headless = measured["vanilla"], measured["headless"]
    positions = vanilla["positions"]
    body, head, cwt = flops(group, positions)
    limit = (body + head) / (body + cwt)
    record = {k: group[k] for k in ("shape", "family", "vocab", "rows", "length", "task")}
    record.update(positions=positions, flops={"body": body, "vanilla_head": head, "cwt": cwt},
                  flop_limit=round(limit, 4), vanilla=vanilla, headless=headless)
    vanilla_s, headless_s = statistics.median(vanilla["times_s"]), statistics.median(headless["times_s"])
    record.update(vanilla_step_s=vanilla_s, headless_step_s=headless_s, speedup=round(vanilla_s / headless_s, 4))
    record["fraction_of_limit"] = round(record["speedup"] / limit, 4)
    if None in (vanilla["step_extra_mb"], headless["step_extra_mb"]):
        record.update(vanilla_peak_mb=None, headless_peak_mb=None, memory_ratio=None, memory_saving_mb=None)
    else:
        peaks = {n: m["persistent_mb"] + m["step_extra_mb"] for n, m in (("vanilla", vanilla), ("headless", headless))}
        record.update(vanilla_peak_mb=round(peaks["vanilla"], 1), headless_peak_mb=round(peaks["headless"], 1),
                      memory_ratio=round(peaks["vanilla"] / peaks["headless"], 4),
                      memory_saving_mb=round(peaks["vanilla"] - peaks["headless"], 1))
    # the vanilla logits at the scored positions and their gradient, fp32
    record["logits_and_gradient_mb"] = round(2 * positions * group["vocab"] * 4 / 2**20, 1)
    target = group["target"]
    if target is None:
        record.update(target=None, meets_target=None)
    else:
        kind, value = target
        needed = value if kind == "speedup" else value * limit
        record.update(target=(f"speed-up >= {value}" if kind == "speedup" else f">= {value:.0%} of the FLOP limit "
                              f"({needed:.3f})"), needed_speedup=round(needed, 4),
                      meets_target=record["speedup"] >= needed)
    record["memory_saving_covers_logits"] = (None if record["memory_saving_mb"] is None
                                             else record["memory_saving_mb"] >= record["logits_and_gradient_mb"])
    return record


def markdown(result):
    lines = [
        f"Headless against vanilla training steps (transformers, CPU, fp32, AdamW), "
        f"{result['settings']['steps']} timed steps alternating, medians. `{result['command']}`",
        "",
        "| shape | vocabulary | batch | scored | vanilla step s | headless step s | speed-up | FLOP limit "
        "| target | met | vanilla peak MB | headless peak MB | memory ratio | saving MB (logits + grad MB) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["groups"]:
        met = {None: "", True: "yes", False: "**no**"}[r["meets_target"]]
        peak = (lambda v: "" if v is None else f"{v:,.0f}")
        lines.append(
            f"| {r['shape']} | {r['vocab']:,} | {r['rows']} x {r['length']} | {r['positions']:,} "
            f"| {r['vanilla_step_s']:.3f} | {r['headless_step_s']:.3f} | {r['speedup']:.2f}x | {r['flop_limit']:.2f}x "
            f"| {r['target'] or 'as measured'} | {met} | {peak(r['vanilla_peak_mb'])} | {peak(r['headless_peak_mb'])} "
            f"| {'' if r['memory_ratio'] is None else format(r['memory_ratio'], '.2f') + 'x'} "
            f"| {peak(r['memory_saving_mb'])} ({r['logits_and_gradient_mb']:,.0f}) |")
    for failed in result["skipped"]:
        lines.append(f"\n{failed['shape']} V={failed['vocab']}: {failed['outcome']}: {failed['why'].splitlines()[-1]}")
    machine = result["machine"]
    lines += ["", f"Machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, torch {machine['torch']} "
              f"({machine['torch_threads']} threads), transformers {machine['transformers']}; load average "
              f"{machine['load_average_at_start']} at the start, {machine.get('load_average_at_end')} at the end."]
    return "\n".join(lines) + "\n"


def main(argv):
    args = parse_args(argv)
    import platform

    import torch
    import transformers

    from studies.benchmarks.machine import run_isolated
    from fairseq_headless.files import write_json_atomic, write_text_atomic

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)  # the forked groups inherit it
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    result = {
        "command": "python -m studies.benchmarks.hf_speed " + " ".join(shlex.quote(a) for a in argv),
        "settings": {"steps": args.steps, "quick": args.quick, "threads": args.threads, "mask_prob": MASK_PROB},
        "machine": {"cpu_model": cpu, "logical_cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "groups": [], "skipped": [],
    }
    started = time.time()
    for group in groups(args):
        outcome, payload = run_isolated(run_group, {"group": group, "steps": args.steps}, torch.device("cpu"))
        if outcome == "result":
            record = summarize(group, payload)
            result["groups"].append(record)
            write_line(f"{group['shape']} V={group['vocab']}: speed-up {record['speedup']:.2f}x "
                       f"(FLOP limit {record['flop_limit']:.2f}x), memory ratio {record['memory_ratio']}")
        else:
            result["skipped"].append({"shape": group["shape"], "vocab": group["vocab"], "outcome": outcome,
                                      "why": payload})
            write_line(f"{group['shape']} V={group['vocab']}: {outcome}: {payload.splitlines()[-1]}")
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.time() - started, 1)
    write_json_atomic(args.output / "benchmark_hf.json", result)
    write_text_atomic(args.output / "benchmark_hf.md", markdown(result))
    write_line(f"wrote {args.output / 'benchmark_hf.json'} and benchmark_hf.md")
    return 1 if result["skipped"] else 0


if __name__ == "__main__":
    sys.exit(run(main))
