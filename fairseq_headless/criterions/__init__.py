"""The CWT criterions: ``headless_masked_lm`` and ``headless_language_modeling``."""

from . import headless_language_modeling, headless_masked_lm  # noqa: F401
