import sys

from studies.demo.twins import main
from studies.training_runs import main_of

sys.exit(main_of(main))
