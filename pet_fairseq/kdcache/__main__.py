import sys

import pet_fairseq  # noqa: F401  (registers the plugin's architectures, needed to load PET teachers)
from pet_fairseq.kdcache.cli import main

sys.exit(main())
