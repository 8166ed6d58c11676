"""``python -m pet_fairseq.pruning``: see :mod:`pet_fairseq.pruning.cli`."""

import sys

from pet_fairseq.pruning.cli import main

if __name__ == "__main__":
    sys.exit(main())
