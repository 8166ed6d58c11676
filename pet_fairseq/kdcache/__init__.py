"""``python -m pet_fairseq.kdcache``: the teacher's top-k distributions on a corpus, computed once (offline word-level KD)."""
