from pet_fairseq.criterions import pet_kd, pet_warmup  # noqa: F401
