"""The one convention of every command line in scripts/: bad input gives one ``error:`` line, exit 2.

A script is argument parsing, one call into the package, and :func:`run` around it. Every error
the user can fix (a missing file, a bad option, a folder that would be overwritten without
``--force``) is an :class:`InputError`, or a subclass named for the stage it comes from; its
message names the file or option at fault and the fix. Anything else is a bug and keeps its
traceback. This module imports neither torch nor fairseq, so ``--help`` and option errors are
immediate.
"""
from __future__ import annotations

import argparse
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


def run(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None,
        errors: tuple[type[BaseException], ...] = (), failures: tuple[type[BaseException], ...] = ()) -> int:
    """Call ``main(argv)``; an :class:`InputError` (or one of ``errors``) becomes one line and status 2,
    one of ``failures`` (whose message names the log to read) one line and status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = main(argv)
    except (InputError, *errors) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_INPUT_ERROR
    except failures as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    return 0 if status is None else int(status)
