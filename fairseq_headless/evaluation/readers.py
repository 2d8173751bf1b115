"""Readers for the benchmarks' distributed files (GLUE/XNLI TSV, SuperGLUE jsonl) that validate.

Every problem is an :class:`InputError` naming the file and line; rows come back as ``(line_number, dict)``
so that later checks can name the line too."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterable, Optional
from ..cli import InputError


# MNLI / QQP fields hold quotes that are not CSV quoting: read every tab-separated
# field verbatim (as GLUE's own readers and the HF `glue` builder do).
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def read_tsv(path: Path, required: Iterable[str], columns: Optional[tuple] = None) -> list:
    """Rows of a tab-separated file as dicts keyed by its header, or by ``columns`` for a file without one
    (CoLA), whose rows must then have exactly that many fields."""
    path = Path(path)
    _check_file(path)
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = list(columns) if columns is not None else next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file (expected a header line and rows)")
        missing = [c for c in required if c not in header]
        if missing:
            where = "its columns (no header)" if columns is not None else "its header"
            raise InputError(f"{path}: missing column {', '.join(repr(c) for c in missing)} in {where}: {header}; is "
                             "this the benchmark's original file?")
        for fields in reader:
            line = reader.line_num
            if not fields or fields == [""]:
                continue  # a blank line (e.g. a trailing one)
            if len(fields) != len(header):
                raise InputError(f"{path} line {line}: {len(fields)} tab-separated fields, expected {len(header)} "
                                 f"({', '.join(header)})")
            rows.append((line, dict(zip(header, fields))))
    if not rows:
        raise InputError(f"{path}: no rows (the split is empty)")
    return rows


def read_jsonl(path: Path, required: Iterable[str]) -> list:
    """Rows of a JSON-lines file (one object per line), each holding the ``required`` keys."""
    path = Path(path)
    _check_file(path)
    required = list(required)
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise InputError(f"{path} line {line}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path} line {line}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise InputError(f"{path} line {line}: missing key {', '.join(repr(k) for k in missing)} (has "
                                 f"{sorted(row)})")
            rows.append((line, row))
    if not rows:
        raise InputError(f"{path}: no rows (the split is empty)")
    return rows


def _check_file(path: Path) -> None:
    if not path.is_file():
        hint = f"; the folder holds {sorted(p.name for p in path.parent.iterdir())}" if path.parent.is_dir() else ""
        raise InputError(
            f"{path}: no such file (expected the benchmark's distribution layout, see docs/evaluation.md){hint}")
