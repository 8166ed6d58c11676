"""Batched beam search over subword token lists with a fairseq checkpoint (student or teacher).

The checkpoint is read with the core's checks (plain errors for a file that is not a
checkpoint, for dictionaries that differ from the data-bin's) and loaded with
:func:`pet_fairseq.core.decode.load_model` (``load_model_ensemble_and_task`` and fairseq's
``SequenceGenerator``); batches are built as ``fairseq-interactive`` builds them
(``task.build_dataset_for_inference`` + ``task.get_batch_iterator``, sorted by length) and decoded
with ``task.inference_step``, so a prepared line gets the hypothesis ``fairseq-generate`` prints for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fairseq import utils

from pet_fairseq.core.checkpoint import read_checkpoint
from pet_fairseq.core.checks import check_dictionaries, resolve_languages, task_config
from pet_fairseq.core.decode import Decoder, load_model
from pet_fairseq.core.direction import check_direction
from pet_fairseq.translate.lines import TranslateError


def training_data_bin(state: dict) -> Optional[Path]:
    """The data-bin a loaded checkpoint was trained on (its ``task.data``, first of several), if recorded."""
    data = task_config(state).get("data")
    return Path(str(data).split(":")[0]) if data else None


class FairseqModel:
    """A fairseq checkpoint ready for batched beam search (see :class:`pet_fairseq.translate.lines.Backend`)."""

    def __init__(self, decoder: Decoder, batch_size: int) -> None:
        self.decoder, self.batch_size = decoder, batch_size
        task, model = decoder.task, decoder.model
        self.max_positions = utils.resolve_max_positions(task.max_positions(), model.max_positions())
        source_positions = self.max_positions[0] if isinstance(self.max_positions, tuple) else self.max_positions
        self.max_source_tokens: Optional[int] = None if source_positions is None else int(source_positions) - 1

    def translate(self, sources: list[list[str]]) -> list[str]:
        """Best hypotheses (BPE kept, as fairseq-generate's H lines) of ``sources``, in input order."""
        task = self.decoder.task
        tokens = [task.source_dictionary.encode_line(" ".join(s), add_if_not_exist=False).long() for s in sources]
        dataset = task.build_dataset_for_inference(tokens, [t.numel() for t in tokens])
        batches = task.get_batch_iterator(
            dataset=dataset, max_tokens=None, max_sentences=self.batch_size, max_positions=self.max_positions,
            ignore_invalid_inputs=False, required_batch_size_multiple=1, disable_iterator_cache=True,
        ).next_epoch_itr(shuffle=False)
        hypotheses: list[Optional[str]] = [None] * len(sources)
        for sample in batches:
            if self.decoder.device.type == "cuda":
                sample = utils.move_to_cuda(sample, self.decoder.device)
            for i, hypos in zip(sample["id"].tolist(), self.decoder.translate(sample)):
                hypotheses[i] = self.decoder.hypothesis_text(hypos[0])
        return [h if h is not None else "" for h in hypotheses]


def load_fairseq_model(checkpoint: Path, data_bin: Optional[Path], source_lang: Optional[str],
                       target_lang: Optional[str], device: str, beam: int, max_len_a: float, max_len_b: int,
                       batch_size: int) -> tuple[FairseqModel, Path, tuple[str, str]]:
    """Load ``checkpoint`` with the dictionaries of ``data_bin`` (default: its training data-bin).

    Returns the model, the data-bin used and the (source, target) languages: the options, else
    the checkpoint's task, else the data-bin's only language pair. Options that contradict the
    direction the checkpoint records are refused (:func:`~pet_fairseq.core.direction.check_direction`).
    """
    state = read_checkpoint(checkpoint)
    task = task_config(state)
    check_direction(str(checkpoint), (task.get("source_lang"), task.get("target_lang")), source_lang, target_lang,
                    TranslateError)
    data_bin = data_bin or training_data_bin(state)
    if data_bin is None or not data_bin.is_dir():
        raise TranslateError(f"{checkpoint} needs the dictionaries of the data-bin it was trained on, and "
                             f"{data_bin or 'its training data-bin (not recorded)'} is not a folder: pass --data-bin DIR")
    langs = resolve_languages(state, data_bin, source_lang, target_lang)
    check_dictionaries(state, data_bin, *langs)
    del state
    decoder = load_model(str(checkpoint), str(data_bin), langs[0], langs[1], device, beam, max_len_a, max_len_b)
    return FairseqModel(decoder, batch_size), data_bin, langs
