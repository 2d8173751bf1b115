"""The export's two ways to fail: bad input (exit status 2) and a failed parity check (exit status 1)."""
from ..cli import InputError


class ExportError(InputError):
    """A checkpoint, data folder or option the export cannot use: ``error: <message>``, exit status 2."""


class ParityError(Exception):
    """The exported model or tokenizer does not reproduce fairseq (nothing is written): exit status 1."""

    EXIT_STATUS = 1

    def __str__(self) -> str:
        return f"parity check failed, nothing written: {super().__str__()}"
