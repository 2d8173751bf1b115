"""The one convention of every command line in scripts/: bad input gives one ``error:`` line, exit 2.

A script is argument parsing, one call into the package, and :func:`run` around it. An error the user
can fix is an :class:`InputError` naming the file or option and the fix; anything else keeps its
traceback. No torch or fairseq import here: ``--help`` is immediate."""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from typing import Callable, Sequence

EXIT_INPUT_ERROR = 2  # argparse's own status for a bad command line
EXIT_FAILURE = 1  # a step that ran and failed (a training that crashed, an export that disagrees)


class InputError(Exception):
    """Bad input or options that the user can fix: printed as ``error: <message>``, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose option errors are :class:`InputError` (one line), not a usage dump."""

    def error(self, message: str):  # argparse hook
        raise InputError(f"{message} (see --help)")


def write_line(line: str, stream=None) -> None:
    """`line` and its newline in one write(2) to `stream` (stderr by default), after what the stream holds.

    ``print(text, file=sys.stderr)`` writes the text and the newline separately, so the ranks of a torchrun
    job, all failing at once into one log, interleave them ("...batch_size=8error: ..."). POSIX keeps one
    write of up to PIPE_BUF (4 KiB) bytes to a pipe whole. A stream without a file descriptor (a test's
    capture) gets one ``write`` call."""
    stream = sys.stderr if stream is None else stream
    data = f"{line}\n"
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        stream.write(data)
        stream.flush()
        return
    stream.flush()
    encoded = data.encode(getattr(stream, "encoding", None) or "utf-8", errors="backslashreplace")
    while encoded:  # a regular file or a blocking pipe takes it whole; a signal may cut a write short
        encoded = encoded[os.write(fd, encoded):]


class Failure(Exception):
    """A step that ran and failed (a crashed training, an export that disagrees with fairseq): ``error:
    <message>``, exit status 1; the message names the log to read."""


class _Console(logging.Handler):
    """Messages on stderr (stdout is for a command's result), ``warning: `` before a warning; each line in one
    write, to whatever ``sys.stderr`` is at the time (a test's capture included)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            write_line(text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}")
        except Exception:  # logging's contract: a failing handler reports, never raises
            self.handleError(record)


LOGGERS = ("fairseq_headless", "studies")  # shown from INFO; other libraries' loggers keep their levels


def show_messages() -> logging.Handler | None:
    """Show this project's log messages (INFO and up) on the console; returns the handler it added (None when
    one is there already)."""
    if any(isinstance(h, _Console) for h in logging.root.handlers):
        return None
    handler = _Console()
    logging.root.addHandler(handler)
    for name in LOGGERS:
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)
    return handler


def run(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None,
        failures: tuple[type[BaseException], ...] = ()) -> int:
    """Call ``main(argv)`` with the messages shown (:func:`show_messages`); an :class:`InputError` becomes one
    ``error:`` line and status 2, a :class:`Failure` (or one of ``failures``) one line and status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    handler = show_messages()
    try:
        status = main(argv)
    except InputError as err:
        write_line(f"error: {err}")
        return EXIT_INPUT_ERROR
    except (Failure, *failures) as err:
        write_line(f"error: {err}")
        return EXIT_FAILURE
    finally:
        if handler is not None:
            logging.root.removeHandler(handler)
    return 0 if status is None else int(status)
