"""pet_fairseq: a fairseq ``--user-dir`` plugin for parameter-efficient students.

Importing the package registers its models, tasks and criteria with fairseq and makes fairseq
checkpoints loadable under torch's ``weights_only`` default, keeps fairseq from dropping the last
batch and makes fairseq's distributed launchers work under torchrun and on CPU (see
:mod:`pet_fairseq.compat`). An option check of the plugin that fails inside ``fairseq-train`` or
``fairseq-generate`` prints one ``error:`` line instead of a traceback
(:func:`pet_fairseq.core.errors.report_user_errors`).
"""

__version__ = "0.1.0"

import logging as _logging

# fairseq's speech task logs "Please install tensorboardX" at import time; nothing here uses it.
_logging.getLogger("fairseq.tasks.text_to_speech").setLevel(_logging.WARNING)

from pet_fairseq import compat as _compat  # noqa: E402
from pet_fairseq.core.errors import report_user_errors as _report_user_errors  # noqa: E402

_report_user_errors()

_compat.allow_fairseq_checkpoints()
_compat.keep_last_partial_batch()
_compat.check_decoded_direction()
_compat.explain_unreadable_checkpoints()
_compat.fix_distributed_training()

from pet_fairseq import criterions, models, tasks  # noqa: E402,F401  (registration side effects)
