"""Writing a result file or folder so that nobody ever reads it half-written (the one atomic writer), and
reading the ``Key: value`` files of Linux's /proc.

A file is written beside its destination and renamed onto it, then given the mode a plain ``open()``
would have (not ``mkstemp``'s 0o600, unreadable to colleagues on a shared filesystem)."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterable, Iterator


def proc_fields(path: str = "/proc/self/status", keys: Iterable[str] | None = None) -> dict[str, str]:
    """The ``Key: value`` lines of a /proc file (``status``, ``meminfo``, ``cpuinfo``, ``smaps_rollup``) as
    {key: value text}, the first of each key, only ``keys`` if given; {} where the file cannot be read (not
    Linux, a process gone). ``int(fields["VmHWM"].split()[0])`` is a size in KiB."""
    wanted = None if keys is None else set(keys)
    fields: dict[str, str] = {}
    try:
        with open(path) as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                key = key.strip()
                if sep and key not in fields and (wanted is None or key in wanted):
                    fields[key] = value.strip()
                    if wanted is not None and len(fields) == len(wanted):
                        break
    except OSError:
        return {}
    return fields


def _umask() -> int:
    umask = proc_fields(keys=["Umask"]).get("Umask")  # Linux >= 4.7: read without setting it (os.umask sets it)
    if umask is not None:
        return int(umask, 8)
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
    """A fresh temporary folder beside `out` to fill, published onto `out` with plain modes when the block ends
    without an error; otherwise removed with the parent folders it created, so a failure leaves nothing behind."""
    out = Path(out)
    workdir = out.parent / f"{out.name}.tmp-{os.getpid()}"  # beside `out`, named for this process
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
