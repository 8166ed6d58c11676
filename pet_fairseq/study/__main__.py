import sys

from pet_fairseq.study.cli import main

sys.exit(main())
