"""The exception the pruning tool reports as a one-line message instead of a traceback."""

from pet_fairseq.core.errors import PetError


class PruningError(PetError):
    """A problem with the user's input (checkpoint, targets, data-bin, options), explained in the message."""
