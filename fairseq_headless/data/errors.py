"""The one error type of the data stage."""


class DataError(Exception):
    """Bad input or options: the command line prints ``error: <message>`` and exits with code 2."""
