import sys

from studies.training_runs import main_of
from studies.vocab_sweep.sweep import main

sys.exit(main_of(main))
