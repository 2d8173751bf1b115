import sys

from studies.along_training.evaluate import main
from studies.training_runs import main_of

sys.exit(main_of(main))
