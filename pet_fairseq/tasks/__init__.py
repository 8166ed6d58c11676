from pet_fairseq.tasks import distillation, warmup  # noqa: F401
