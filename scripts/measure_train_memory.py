#!/usr/bin/env python
"""Host memory of training per block per rank, measured on synthetic splits (issue 16 part 3).

    python scripts/measure_train_memory.py --tokens 256M 2G --output bench-memory/       # BENCHMARKS.md
    python scripts/measure_train_memory.py --tokens 20k 60k --configs hmlm_tiny hlm_tiny --output /tmp/m  # seconds

For each ``--tokens`` size a paragraph-per-line split is written into fairseq's mmap format under
``--workdir`` (refused if larger than half its free disk; deleted after), every ``--configs`` config
builds its training split's batches as rank 0 of ``--ranks`` does (a forked child each), and the
per-block slope between sizes is projected to ``--corpus-tokens`` on one node, with the largest shard
that fits ``--node-memory-gb`` (:mod:`fairseq_headless.benchmarking.host_memory`). Writes
``OUTPUT/host_memory.json`` and ``OUTPUT/host_memory.md``; refuses to overwrite them without ``--force``.
"""

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from fairseq_headless.benchmarking import host_memory
    from fairseq_headless.files import write_json_atomic, write_text_atomic as write_atomic

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", nargs="+", default=["256M", "2G"],
                        help="split sizes in tokens (k/M/G = 1e3/1e6/1e9); two per index dtype give a slope")
    parser.add_argument("--configs", nargs="+", default=["hmlm_base", "hlm_pythia70m"],
                        help="configs/ names: the OWT2 encoder and decoder by default")
    parser.add_argument("--ranks", type=int, default=8, help="data-parallel ranks on one node")
    parser.add_argument("--vocab-size", type=int, default=50304, help="dictionary rows (Pythia's padded 50,304)")
    parser.add_argument("--mean-line-tokens", type=float, default=60.0, help="mean ids per line (paragraph)")
    parser.add_argument("--lines-per-document", type=int, default=16)
    parser.add_argument("--corpus-tokens", type=float, default=17e9, help="projected corpus (OWT2: ~17B)")
    parser.add_argument("--node-memory-gb", type=float, default=64.0, help="host memory the shard rule fits in")
    parser.add_argument("--no-shard-switch", action="store_true",
                        help="skip loading the split a second time (the epoch boundary of sharded data)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the splits go (default: a temp folder)")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)

    json_path, md_path = args.output / "host_memory.json", args.output / "host_memory.md"
    if not args.force and (json_path.exists() or md_path.exists()):
        print(f"error: {json_path} exists; --force replaces it", file=sys.stderr)
        return 2
    try:
        tokens = [host_memory.parse_tokens(t) for t in args.tokens]
    except ValueError:
        print(f"error: --tokens takes counts like 256M or 2G, not {args.tokens}", file=sys.stderr)
        return 2
    command = "python scripts/measure_train_memory.py " + " ".join(map(shlex.quote, argv or sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="host-memory-", dir=args.workdir) as workdir:
        try:
            result = host_memory.run(
                args.configs, tokens, Path(workdir), ranks=args.ranks, vocab_size=args.vocab_size,
                mean_line_tokens=args.mean_line_tokens, lines_per_document=args.lines_per_document,
                corpus_tokens=args.corpus_tokens, node_memory_gb=args.node_memory_gb,
                shard_switch=not args.no_shard_switch, keep_data=args.keep_data,
                on_progress=lambda message: print(message, flush=True))
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    result["command"] = command
    write_json_atomic(json_path, result)
    write_atomic(md_path, host_memory.markdown(result, command))
    print(f"wrote {json_path} and {md_path}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
