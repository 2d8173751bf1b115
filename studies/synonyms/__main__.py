"""``python -m studies.synonyms``: the command line of :mod:`.cli` (paper App. A, Fig.8)."""
import logging
import sys

logging.getLogger("fairseq").setLevel(logging.WARNING)  # importing the package imports fairseq; stderr is for errors

from fairseq_headless.cli import run  # noqa: E402
from studies.synonyms.cli import main  # noqa: E402

sys.exit(run(main))
