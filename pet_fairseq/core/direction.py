"""The direction a model translates: ``--source-lang``/``--target-lang`` may only repeat what the model records.

A fairseq checkpoint records its direction in its task (``-s``/``-t`` of ``fairseq-train``), a
CTranslate2 export in ``pet_export.json``. A data-bin serves both directions, so without this
check an en->de model run with ``--source-lang de --target-lang en`` is fed German, produces
something, and the tool prints a ``de->en`` header over it. A model that records no direction
(trained without ``-s``/``-t``) is not checked: the options, else the data-bin, decide.
"""

from __future__ import annotations

from typing import Optional, Type


def check_direction(model: str, recorded: tuple[Optional[str], Optional[str]], source_lang: Optional[str],
                    target_lang: Optional[str], error: Type[Exception] = ValueError) -> None:
    """Raise ``error`` when a given ``--source-lang``/``--target-lang`` differs from the ``recorded`` direction.

    ``model`` names the model in the message; ``recorded`` is (source, target) as the model stores
    them, either of them None when not recorded (then that side is not checked).
    """
    given = (("source", source_lang, recorded[0]), ("target", target_lang, recorded[1]))
    contradicting = [(side, value) for side, value, known in given if value and known and value != known]
    if not contradicting:
        return
    asked = f"{source_lang or recorded[0] or '?'}->{target_lang or recorded[1] or '?'}"
    options = " ".join(f"--{side}-lang {value}" for side, value in contradicting)
    raise error(f"{model} translates {recorded[0] or '?'}->{recorded[1] or '?'}, but {options} asks for {asked}: a model only "
                f"translates the direction it was trained for; drop {options} (or use a model trained for {asked})")
