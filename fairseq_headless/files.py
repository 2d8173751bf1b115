"""Writing a result file or folder so that nobody ever reads it half-written: the one atomic writer.

Every file the project writes for people or for a later stage (checkpoints copied by fairseq,
JSON and markdown results, plots, tokenizers) goes to a temporary file beside its destination
and is renamed onto it (a rename within one folder is atomic on POSIX filesystems). The file then
gets the mode a plain ``open()`` would have given it: the existing file's mode, or 0o666 less the
umask. ``tempfile.mkstemp`` would leave 0o600, which colleagues on a shared filesystem cannot read.
Libraries that write atomically themselves do just that (safetensors' ``save_file``, hence
transformers' ``save_pretrained``, writes ``model.safetensors`` through a 0o600 temporary file), so a
folder published by :func:`atomic_folder` gets the plain modes throughout (:func:`give_plain_modes`).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    try:  # Linux >= 4.7: read it without changing it (os.umask() sets it, for every thread)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_open_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` leaves: the file's own if it exists, else 0o666 - umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def give_plain_modes(folder) -> None:
    """Every file and folder under `folder` (itself included) gets the mode a plain ``open()`` or ``mkdir()``
    gives under the umask: 0o666 or 0o777 (folders, executables) less the umask. Links are left alone."""
    mask = _umask()
    for parent, _, names in os.walk(folder):
        os.chmod(parent, 0o777 & ~mask)
        for name in names:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o100
                os.chmod(path, (0o777 if executable else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends without an
    error, removed otherwise (a block that writes nothing leaves `path` as it was). It ends with `path`'s
    suffix, so that matplotlib and friends pick the format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, plain_open_mode(path))
            with open(tmp, "rb") as written:  # on disk before the rename, or a crash can leave an empty file
                os.fsync(written.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path, obj, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def copy_atomic(src, dst) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def publish_folder(workdir, out, replace: bool) -> None:
    """Rename the finished folder `workdir` onto `out` (the same filesystem: the rename is atomic). An existing
    `out` is kept unless `replace` (FileExistsError), and then moved aside first and deleted only once the
    new folder is in place, so that a crash leaves the old or the new folder, never a mix."""
    workdir, out = Path(workdir), Path(out)
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.exists():
        if not replace:
            raise FileExistsError(out)
        out.rename(old)
    try:
        workdir.rename(out)
    except BaseException:
        if old.exists():
            old.rename(out)
        raise
    if old.exists():
        shutil.rmtree(old)


def temporary_folder(out) -> Path:
    """Where :func:`atomic_folder` builds `out`: beside it, named for this process."""
    out = Path(out)
    return out.parent / f"{out.name}.tmp-{os.getpid()}"


def missing_parents(path) -> list[Path]:
    """The folders above `path` that do not exist yet, outermost first: what a writer that leaves nothing
    behind on failure creates and removes again (:func:`remove_empty`)."""
    return [p for p in reversed(Path(path).parents) if not p.exists()]


def remove_empty(folders) -> None:
    """Remove `folders` (as :func:`missing_parents` lists them) that are still empty, innermost first."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty (someone else's now), or gone
            pass


@contextlib.contextmanager
def atomic_folder(out, replace: bool) -> Iterator[Path]:
    """A fresh temporary folder beside `out` to fill (exports, the demo corpus): published onto
    `out` by :func:`publish_folder` when the block ends without an error, with plain modes throughout
    (whatever library wrote in it); otherwise removed, with the parent folders it had to create, so that a
    failure (Ctrl-C included) leaves nothing behind."""
    out = Path(out)
    workdir = temporary_folder(out)
    created = missing_parents(out)
    try:
        for parent in created:
            parent.mkdir()
        if workdir.exists():  # left over by a killed run with our pid
            shutil.rmtree(workdir)
        workdir.mkdir()
        yield workdir
        give_plain_modes(workdir)
        publish_folder(workdir, out, replace)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        remove_empty(created)
        raise


def save_figure_atomic(fig, path, dpi: int = 110) -> None:
    """A matplotlib figure written atomically (the format from `path`'s suffix), then closed."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
