"""The one error type of the analysis package: bad input that the user can fix.

studies/synonyms/ prints it as a single ``error: ...`` line and exits with
status 2; its message names the file or option at fault and what to do.
"""

from fairseq_headless.cli import InputError


class AnalysisInputError(InputError, ValueError):
    """A lexicon, model or option that cannot be used as given."""
