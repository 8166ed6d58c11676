"""What the tools and the training components share: file identities, atomic writes, the teacher cache.

Modules here import fairseq, torch and numpy but never a tool package (``seqkd``, ``study``,
``export``, ``pruning``, ``translate``, ``evaluation``, ``kdcache``).
"""
