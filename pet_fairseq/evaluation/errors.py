"""The exception type of the evaluation tool's own checks, reported as a clear, user-facing message."""

from pet_fairseq.core.errors import PetError


class EvaluationError(PetError):
    """A problem with the user's input (checkpoint, data-bin, options), explained in the message.

    The comparison tool prints the message in the model's row (``FAILED: ...``) instead of a
    traceback, and carries on with the other models; so it does with the
    :class:`~pet_fairseq.core.errors.InputError` of the core's checkpoint, data-bin and model
    directory checks. Other tools never see this class.
    """
