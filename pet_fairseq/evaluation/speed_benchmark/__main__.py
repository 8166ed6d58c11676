"""``python -m pet_fairseq.evaluation.speed_benchmark``: the same ``main`` as ``pet-speed-benchmark``."""

import sys

from pet_fairseq.evaluation.speed_benchmark.cli import main

sys.exit(main())
