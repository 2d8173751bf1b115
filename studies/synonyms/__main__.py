import sys

from studies.synonyms.cli import main
from studies.training_runs import main_of

sys.exit(main_of(main))
