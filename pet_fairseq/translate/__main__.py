"""Entry point: ``python -m pet_fairseq.translate --help``."""

import sys

from pet_fairseq.translate.cli import main

if __name__ == "__main__":
    sys.exit(main())
