"""Reading a corpus as a stream of records, in work units that workers read independently.

Uncompressed files are cut into byte ranges, compressed ones into blocks of decompressed text that the
main process hands out. A record (a jsonl line, or a text document or 8 KiB piece of one) is named by
``(Source.name, position)``, so any worker decides its split and shard alone (docs/data.md)."""
from __future__ import annotations

import bz2
import contextlib
import dataclasses
import gzip
import importlib
import io
import json
import lzma
import os
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence
from ..cli import InputError


TEXT_KINDS = (".txt", ".jsonl")
# A range of an uncompressed file read by one worker. Small enough that a 40 MB file keeps two
# workers busy, large enough that OWT2-sized input is a few thousand units, not millions of files.
UNIT_BYTES = 16 << 20
# Longest record of a text file: about 2,000 tokens (Pythia's context is 2,048), and small enough that a
# file without blank lines (one document) still splits into valid, test and train at the requested sizes.
RECORD_BYTES = 8 << 10
# A block of a compressed file, handed from the reader to a worker: small enough that the last blocks of a
# file keep every worker busy (BENCHMARKS.md, "One compressed file"), large enough to cost nothing to hand over.
BLOCK_BYTES = 1 << 20


class _ZstdFrames(io.RawIOBase):
    """A .zst file as a byte stream, frame after frame (concatenated files hold several), that
    fails on a truncated last frame: zstandard's own stream reader ends quietly there, which would
    lose the end of a file without a word."""

    def __init__(self, raw):
        import zstandard
        self._zstd, self._raw = zstandard, raw
        self._pending, self._offset = b"", 0  # decompressed bytes not handed out yet
        self._frame = None  # the decompressor of the frame being read

    def readable(self):
        return True

    def _new_frame(self):
        # OpenWebText2's files are written with long windows.
        return self._zstd.ZstdDecompressor(max_window_size=2 ** 31).decompressobj()

    def readinto(self, buffer):
        while self._offset == len(self._pending):
            chunk = self._raw.read(1 << 17)  # small: text expands ~4x, and far more in odd files
            if not chunk:
                if self._frame is not None:
                    raise EOFError("the file ends inside a zstd frame (truncated)")
                return 0
            parts = []
            while chunk:
                if self._frame is None:
                    self._frame = self._new_frame()
                parts.append(self._frame.decompress(chunk))
                if self._frame.eof:
                    chunk, self._frame = self._frame.unused_data, None
                else:
                    chunk = b""
            self._pending, self._offset = b"".join(parts), 0
        n = min(len(buffer), len(self._pending) - self._offset)
        buffer[:n] = memoryview(self._pending)[self._offset:self._offset + n]
        self._offset += n
        return n


def _open_zstd(raw):
    try:
        import zstandard  # noqa: F401
    except ImportError:
        raise InputError("reading .zst files needs the `zstandard` package: pip install zstandard") from None
    return io.BufferedReader(_ZstdFrames(raw), 1 << 20)


COMPRESSIONS: dict[str, Callable] = {".gz": lambda raw: gzip.open(raw, "rb"), ".bz2": lambda raw: bz2.open(raw, "rb"),
                                     ".xz": lambda raw: lzma.open(raw, "rb"), ".zst": _open_zstd}
# First bytes of compressed data: a file whose name says otherwise is refused rather than read as
# text (it would fail later with a misleading "invalid UTF-8" message).
MAGIC = {b"\x1f\x8b": ".gz", b"BZh": ".bz2", b"\xfd7zXZ\x00": ".xz", b"\x28\xb5\x2f\xfd": ".zst",
         b"PK\x03\x04": "zip", b"\x04\x22\x4d\x18": "lz4", b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!": "rar",
         b"\x1f\x9d": "compress (.Z)"}
UNSUPPORTED_SUFFIXES = (".zip", ".lz4", ".7z", ".rar", ".lzma", ".lz", ".br", ".Z", ".tar", ".tgz", ".zstd",
                        ".sz", ".lzo", ".snappy")
ACCEPTED = ".txt or .jsonl files, plain or compressed as .gz, .bz2, .xz or .zst, or folders of them"
DECOMPRESSION_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError)


@dataclasses.dataclass(frozen=True)
class Source:
    """One thing to read: a file on disk or a Hugging Face dataset."""

    path: str  # as shown in messages and the manifest
    # What the split hashes: the path below the input's own name ("sotu/1790_washington.txt"), so that the
    # same corpus mounted elsewhere (the machines of a Slurm array) splits the same way.
    name: str
    language: str | None
    kind: str  # "txt" | "jsonl" | "hf"
    compression: str | None = None
    size: int = 0  # bytes on disk (0 for a dataset)
    hf: tuple[str, str | None, str] | None = None  # (name, config, split)


@dataclasses.dataclass(frozen=True)
class Unit:
    """A piece of one source that one worker reads: ``[start, end)`` of an uncompressed file, a
    block ``[start, end)`` of a compressed file's decompressed text, or the whole source (``end``
    None; for a compressed file, until the scan has found its blocks)."""

    index: int  # corpus order: per-unit outputs are joined in this order
    source: int  # index into the source list
    start: int = 0
    end: int | None = None
    disk: int | None = None  # a block's share of the compressed file (for progress)
    # A block's decompressed text, attached by the reader for the one worker that reads it.
    data: bytes | None = dataclasses.field(default=None, repr=False, compare=False)

    def disk_bytes(self, sources: Sequence[Source]) -> int:
        if self.disk is not None:
            return self.disk
        return (self.end - self.start) if self.end is not None else sources[self.source].size


@dataclasses.dataclass
class Record:
    position: int  # byte offset of its first line in the decompressed file (row number for hf:)
    lines: list[str]  # non-empty, whitespace-stripped
    continues: bool = False  # continues the previous record's document (a cut text document)


# -- finding the sources --


def _known_compression(name: str) -> str | None:
    return next((s for s in COMPRESSIONS if name.endswith(s)), None)


def _strip_compression(name: str) -> str:
    suffix = _known_compression(name)
    return name[: -len(suffix)] if suffix else name


def _looks_compressed_unknown(name: str) -> bool:
    """`x.jsonl.lz4`: a corpus file in a format we cannot read, which a folder scan must not skip."""
    return any(name.endswith(s) and name[: -len(s)].endswith(TEXT_KINDS) for s in UNSUPPORTED_SUFFIXES)


def check_compression(path: Path) -> str | None:
    """The file's compression suffix, after checking that its first bytes agree."""
    name = path.name
    suffix = _known_compression(name)
    if suffix is None and name.endswith(UNSUPPORTED_SUFFIXES):
        raise InputError(f"{path}: unknown compression {Path(name).suffix}; accepted: {ACCEPTED}")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e})") from None
    found = next((fmt for magic, fmt in MAGIC.items() if head.startswith(magic)), None)
    if found is not None and found != suffix:
        said = f"its name ends in {suffix}" if suffix else "its name has no compression suffix"
        if found in COMPRESSIONS:
            raise InputError(f"{path}: the data is {found}-compressed but {said}; rename it to end in "
                            f"{_strip_compression(name)}{found}")
        raise InputError(f"{path}: unknown compression ({found} data); accepted: {ACCEPTED}")
    return suffix


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """`hf:NAME[:CONFIG][:SPLIT]` -> (name, config, split); split defaults to train."""
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise InputError(f"{spec}: expected hf:NAME[:CONFIG][:SPLIT]")
    parts += ["", ""]
    return parts[0], parts[1] or None, parts[2] or "train"


def _file_source(path: Path, name: str, language: str | None) -> Source:
    compression = check_compression(path)
    kind = "jsonl" if _strip_compression(path.name).endswith(".jsonl") else "txt"
    return Source(path=str(path), name=name, language=language, kind=kind, compression=compression,
                  size=path.stat().st_size)


def resolve_inputs(inputs: Iterable[tuple[str | None, str]], exclude: Sequence[Path] = ()) -> list[Source]:
    """Expand folders (recursively, sorted) and check every path exists.

    Files under `exclude` (the output folder and its temporary siblings) are skipped so that
    re-running into a folder inside an input folder does not read our own files back as text."""
    inputs = list(inputs)
    option = "--lang-input" if any(lang is not None for lang, _ in inputs) else "--input"
    sources: list[Source] = []
    for lang, raw in inputs:
        if raw.startswith("hf:"):
            sources.append(Source(path=raw, name=raw, language=lang, kind="hf", hf=parse_hf_spec(raw)))
            continue
        path = Path(raw)
        if not path.exists():
            raise InputError(f"input path not found: {raw} ({option}); check the path")
        base = Path(os.path.abspath(path)).name
        if not path.is_dir():
            sources.append(_file_source(path, base, lang))
            continue
        found = []
        for f in sorted(path.rglob("*")):
            if not f.is_file() or any(Path(os.path.abspath(f)).is_relative_to(ex) for ex in exclude):
                continue
            if _looks_compressed_unknown(f.name):
                raise InputError(f"{f}: unknown compression {f.suffix}; accepted: {ACCEPTED}")
            if _strip_compression(f.name).endswith(TEXT_KINDS):
                found.append(f)
        if not found:
            raise InputError(f"no .txt or .jsonl files (optionally .gz/.bz2/.xz/.zst) under folder {raw} ({option})")
        sources.extend(_file_source(f, f"{base}/{f.relative_to(path).as_posix()}", lang) for f in found)
    seen: dict[str, str] = {}
    for s in sources:
        if s.name in seen:
            raise InputError(f"{seen[s.name]} and {s.path} have the same name {s.name!r}, which decides the "
                            f"split; give each input once, or rename one")
        seen[s.name] = s.path
    return sources


def make_units(sources: Sequence[Source], unit_bytes: int | None = None) -> list[Unit]:
    """Cut the sources into units; uncompressed files at the first line start at or after each
    multiple of unit_bytes (every line belongs to exactly one unit)."""
    unit_bytes = unit_bytes or UNIT_BYTES
    units: list[Unit] = []
    for i, s in enumerate(sources):
        if s.kind == "hf" or s.compression or s.size <= unit_bytes:
            units.append(Unit(len(units), i, 0, None if (s.kind == "hf" or s.compression) else s.size))
            continue
        starts = [0]
        with open(s.path, "rb") as f:
            for nominal in range(unit_bytes, s.size, unit_bytes):
                if nominal <= starts[-1]:
                    continue
                f.seek(nominal - 1)
                f.readline()  # to the end of the line holding byte nominal-1
                if f.tell() < s.size and f.tell() > starts[-1]:
                    starts.append(f.tell())
        for start, end in zip(starts, starts[1:] + [s.size]):
            units.append(Unit(len(units), i, start, end))
    return units


# -- reading a unit --

ProgressFn = Callable[[int], None]  # called with on-disk bytes consumed since the last call


def is_streamed(sources: Sequence[Source], unit: Unit) -> bool:
    """A unit of a compressed file: the reader decompresses it, a worker gets its text."""
    return sources[unit.source].compression is not None


def stream_blocks(source: Source, on_bytes: ProgressFn, ends: Sequence[int] | None = None,
                  block_bytes: int | None = None) -> Iterator[tuple[int, int, int, bytes]]:
    """(start, end, disk bytes, text) of each block of a compressed file, in order, decompressed
    once. A block ends at the first line start at or after each multiple of ``block_bytes`` (the
    rule of ``make_units``), or at the given ``ends`` (the blocks the scan found). A file always
    has one block, if an empty one. Holds one block and one read ahead."""
    block_bytes = block_bytes or BLOCK_BYTES
    ends = list(ends) if ends is not None else None
    with _reading(source), open(source.path, "rb") as raw:
        stream = COMPRESSIONS[source.compression](raw)
        buffer, start, told, emitted = bytearray(), 0, 0, False
        while True:
            chunk = stream.read(1 << 20)
            buffer += chunk
            while True:  # every cut with a byte after it in the buffer (none at the end of the file)
                if ends is not None:
                    cut = ends[0] - start if ends and ends[0] - start < len(buffer) else None
                else:
                    nominal = (start // block_bytes + 1) * block_bytes
                    newline = buffer.find(b"\n", nominal - 1 - start) if nominal - 1 - start < len(buffer) else -1
                    cut = newline + 1 if 0 <= newline < len(buffer) - 1 else None
                if cut is None:
                    break
                disk, told = raw.tell() - told, raw.tell()
                on_bytes(disk)
                with memoryview(buffer) as view:
                    block = bytes(view[:cut])
                yield start, start + cut, disk, block
                del block, buffer[:cut]
                start += cut
                emitted = True
                if ends is not None:
                    ends.pop(0)
            if not chunk:
                break
        if ends is not None and ends != [start + len(buffer)]:
            raise InputError(f"{source.path}: the file changed since it was scanned; pass --force to start over")
        if buffer or not emitted:
            disk = raw.tell() - told
            on_bytes(disk)
            yield start, start + len(buffer), disk, bytes(buffer)


def _lines(source: Source, unit: Unit, on_bytes: ProgressFn) -> Iterator[tuple[int, bytes]]:
    """(offset in the decompressed file, raw line) for every line of the unit."""
    if unit.data is not None:  # a block of a compressed file: the reader has counted its bytes
        offset = unit.start
        for data in io.BytesIO(unit.data):
            yield offset, data
            offset += len(data)
        return
    reported = 0
    total = unit.disk_bytes([source]) if unit.end is not None else None
    with open(source.path, "rb") as raw:
        if source.compression:
            stream = COMPRESSIONS[source.compression](raw)
        else:
            raw.seek(unit.start)
            stream = raw
        offset, end = unit.start, unit.end
        for n, data in enumerate(stream):
            if end is not None and not source.compression and offset >= end:
                break
            yield offset, data
            offset += len(data)
            if n % 512 == 511:  # a worker's progress reaches the parent every second or so
                done = raw.tell() - unit.start
                if total is not None:
                    done = min(done, total)
                on_bytes(done - reported)
                reported = done
        done = total if total is not None else raw.tell()
        on_bytes(done - reported)


def _decode(source: Source, offset: int, data: bytes, lineno: int | None) -> str:
    # Strict: a wrong encoding is reported with its byte offset instead of silently becoming
    # U+FFFD replacement characters.
    try:
        line = data.decode("utf-8")
    except UnicodeDecodeError as e:
        where = " (after decompression)" if source.compression else ""
        line = f" (line {lineno})" if lineno is not None else ""
        raise InputError(f"{source.path}: invalid UTF-8 at byte offset {offset + e.start}{where}{line}; "
                        f"re-encode the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None
    if offset == 0 and line.startswith("\ufeff"):
        line = line[1:]  # byte order mark
    return line


def record_lines(text, where: str, field: str) -> list[str]:
    """One jsonl/dataset record is one document. Blank lines inside a record are paragraph
    breaks, not document boundaries, and are dropped."""
    if not isinstance(text, str):
        raise InputError(f"{where}: field {field!r} is {type(text).__name__}, not a string "
                        f"(choose the text field with --jsonl-field)")
    return [s for s in (part.strip() for part in text.split("\n")) if s]


def _text_records(source: Source, lines: Iterator[tuple[int, bytes]], from_start: bool) -> Iterator[Record]:
    record: Record | None = None
    size, cut = 0, False
    for n, (offset, data) in enumerate(lines, start=1):
        line = _decode(source, offset, data, n if from_start else None).strip()
        if not line:
            if record is not None:
                yield record
            record, cut = None, False
            continue
        if record is None:
            record, size = Record(offset, [], continues=cut), 0
        record.lines.append(line)
        size += len(data)
        if size >= RECORD_BYTES:
            yield record
            record, cut = None, True
    if record is not None:
        yield record


def _jsonl_records(source: Source, lines: Iterator[tuple[int, bytes]], field: str,
                   want: Callable[[int], bool] | None, from_start: bool) -> Iterator[Record]:
    # Line numbers are known only when the unit starts the file; the byte offset always is.
    for n, (offset, data) in enumerate(lines, start=1):
        if want is not None and not want(offset):
            continue  # another shard's record: not even parsed
        line = _decode(source, offset, data, n if from_start else None)
        if not line.strip():
            continue
        where = f"{source.path} line {n}" if from_start else f"{source.path} byte offset {offset}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: invalid JSON ({e.msg}); each line must be one JSON object") from None
        if not isinstance(record, dict) or field not in record:
            raise InputError(f"{where}: no {field!r} field (choose it with --jsonl-field)")
        text = record_lines(record[field], where, field)
        if text:
            yield Record(offset, text)


def _hf_records(source: Source, field: str, want) -> Iterator[Record]:
    name, config, split = source.hf
    try:
        datasets = importlib.import_module("datasets")
    except ImportError:
        raise InputError(f"--input {source.path} needs the `datasets` library, which is not installed: "
                        f"`pip install datasets`, or export the data to .txt/.jsonl files and pass those") from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline hub, unknown name, bad config...: all the user's to fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"--input {source.path}: could not load the dataset from the Hugging Face hub ({first}); "
                        f"check the name and network, or pass local files") from None
    if field not in ds.column_names:
        raise InputError(f"--input {source.path}: no {field!r} column (columns: {', '.join(ds.column_names)}); "
                        f"choose one with --jsonl-field")
    for i, row in enumerate(ds):
        if want is not None and not want(i):
            continue
        text = record_lines(row[field], f"{source.path} record {i}", field)
        if text:
            yield Record(i, text)


def read_unit(sources: Sequence[Source], unit: Unit, field: str, on_bytes: ProgressFn = lambda n: None,
              want: Callable[[int], bool] | None = None) -> Iterator[Record]:
    """The records of one unit, in file order. ``want(position)`` may skip jsonl records before
    they are parsed (a shard reading only its own records); text records are always read."""
    source = sources[unit.source]
    if source.kind == "hf":
        yield from _hf_records(source, field, want)
        return
    with _reading(source):
        lines = _lines(source, unit, on_bytes)
        from_start = unit.start == 0
        if source.kind == "jsonl":
            yield from _jsonl_records(source, lines, field, want, from_start)
        else:
            yield from _text_records(source, lines, from_start)


@contextlib.contextmanager
def _reading(source: Source):
    """A file that cannot be read or decompressed: one InputError naming it."""
    try:
        yield
    except InputError:
        raise
    except DECOMPRESSION_ERRORS as e:
        comp = source.compression
        if comp:
            raise InputError(f"{source.path}: cannot decompress this {comp} file ({e}); check that it is a "
                            f"complete, valid {comp} archive") from None
        raise InputError(f"{source.path}: cannot read it ({e})") from None
    except Exception as e:
        if type(e).__name__ == "ZstdError":
            raise InputError(f"{source.path}: cannot decompress this .zst file ({e}); check that it is a "
                            f"complete, valid .zst archive") from None
        raise
