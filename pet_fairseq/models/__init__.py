from pet_fairseq.models import pet_transformer  # noqa: F401
