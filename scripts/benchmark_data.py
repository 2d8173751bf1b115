#!/usr/bin/env python
"""Speed and memory of the data stage, and the OpenWebText2 projection (issue 16, BENCHMARKS.md).

    python scripts/benchmark_data.py --quick --output bench-data/    # a few minutes on 2 cores
    python scripts/benchmark_data.py --output bench-data/            # the full measurement (quiet machine)
    python scripts/benchmark_data.py --smoke --output /tmp/bd        # seconds, tiny tokenizers (the tests)
    python scripts/benchmark_data.py --quick --corpus owt2-sample/ --output bench-data/   # your own .jsonl

What is measured and how: fairseq_headless/benchmarking/data.py. Writes OUTPUT/benchmark_data.json
(machine, settings, every run), OUTPUT/benchmark_data.md (tables, the issue's targets checked) and
OUTPUT/benchmark_data.png; the generated corpus and the trained tokenizers stay in OUTPUT/work and
OUTPUT/cache for the next run. Refuses to overwrite a result without --force.
"""
import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a 12 MB corpus, memory at 4 and 40 MB, one repeat")
    size.add_argument("--smoke", action="store_true", help="tiny corpus and tokenizers: checks the plumbing only")
    parser.add_argument("--output", type=Path, required=True, help="folder for the JSON, markdown and PNG")
    parser.add_argument("--corpus", type=Path, help="a folder of .jsonl files to measure on (default: generated)")
    parser.add_argument("--force", action="store_true", help="overwrite an earlier result in --output")
    args = parser.parse_args(argv)
    if args.output.exists() and not args.output.is_dir():
        parser.error(f"--output {args.output} is a file; give a folder")
    if (args.output / "benchmark_data.json").exists() and not args.force:
        parser.error(f"--output {args.output} already holds benchmark_data.json; add --force to overwrite it")
    if args.corpus is not None and not any(args.corpus.glob("*.jsonl")):
        parser.error(f"--corpus {args.corpus}: no .jsonl files in it")

    from fairseq_headless.benchmarking import data
    from fairseq_headless.files import write_json_atomic, write_text_atomic as write_atomic

    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.output.mkdir(parents=True, exist_ok=True)
    result = data.run(args.output, preset, args.corpus, log=lambda message: print(message, flush=True))
    command = shlex.join(["python", "scripts/benchmark_data.py", *(sys.argv[1:] if argv is None else argv)])
    result["command"] = command
    write_atomic(args.output / "benchmark_data.md", data.markdown(result, command))
    data.plot(result, args.output / "benchmark_data.png")
    write_json_atomic(args.output / "benchmark_data.json", result)  # last: a finished run has it
    print((args.output / "benchmark_data.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
