"""The one error type of the data stage."""
from ..cli import InputError


class DataError(InputError):
    """Bad input or options: the command line prints ``error: <message>`` and exits with code 2."""
