"""Entry point: ``python -m pet_fairseq.preprocessing --help``."""

import sys

from pet_fairseq.preprocessing.cli import main

if __name__ == "__main__":
    sys.exit(main())
