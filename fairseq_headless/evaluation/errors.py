"""The one error type of the evaluation package: bad input that the user can fix.

The scripts print it as a single ``error: ...`` line and exit with status 2; its
message names the file or option at fault and what to do.
"""

from ..cli import InputError


class EvaluationInputError(InputError, ValueError):
    """A data file, model folder or option that cannot be used as given."""
