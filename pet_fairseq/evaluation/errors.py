"""The one exception type the comparison tool reports as a clear, user-facing message."""

from pet_fairseq.core.errors import PetError


class EvaluationError(PetError):
    """A problem with the user's input (checkpoint, data-bin, options), explained in the message.

    The comparison tool prints the message in the model's row (``FAILED: ...``) instead of a
    traceback, and carries on with the other models.
    """
