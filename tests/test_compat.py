"""The compat module: safe checkpoint loading under torch>=2.6 and fairseq's dropped last batch."""

import argparse
import io

import numpy as np
import pytest
import torch
from fairseq.data import data_utils

import pet_fairseq  # noqa: F401  (applies the compat fixes)


def test_weights_only_load_accepts_fairseq_checkpoint_objects():
    ckpt = {"args": argparse.Namespace(arch="pet_iwslt_de_en", lr=[5e-4]),
            "extra_state": {"best": np.float64(3.5), "meters": np.arange(3, dtype=np.int32)},
            "model": {"w": torch.ones(2)}}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert loaded["args"].arch == "pet_iwslt_de_en"
    assert float(loaded["extra_state"]["best"]) == 3.5
    assert loaded["extra_state"]["meters"].tolist() == [0, 1, 2]


class Evil:
    """Not allow-listed: unpickling it could run arbitrary code."""


def test_weights_only_still_rejects_arbitrary_objects():
    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    buf.seek(0)
    with pytest.raises(Exception, match="weights_only"):
        torch.load(buf, weights_only=True)


@pytest.mark.parametrize("kwargs", [dict(max_sentences=50), dict(max_sentences=100), dict(max_tokens=300), dict(max_sentences=1)])
def test_batches_cover_every_sentence_once_in_order(kwargs):
    indices = np.arange(100)
    batches = data_utils.batch_by_size(indices, lambda i: 10, required_batch_size_multiple=8, **kwargs)
    assert np.concatenate(batches).tolist() == list(range(100))
    if kwargs.get("max_sentences", 8) >= 8:
        assert all(len(b) % 8 == 0 for b in batches[:-1])


def test_a_model_is_not_loaded_for_a_task_of_the_other_direction(tmp_path):
    """fairseq-generate builds the task from -s/-t and loads the models through this function."""
    from fairseq import checkpoint_utils
    from fairseq.tasks.translation import TranslationConfig, TranslationTask

    from pet_fairseq.core.errors import ConfigError
    from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir

    data = write_data_dir(tmp_path / "bin", toy_dictionary(40))  # dict.de.txt and dict.en.txt
    path, _, _ = make_checkpoint(tmp_path / "de-en.pt", data, "transformer", "--encoder-layers", "1",
                                 "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
                                 "--encoder-ffn-embed-dim", "16", "--decoder-ffn-embed-dim", "16")

    def task(src, tgt):
        return TranslationTask.setup_task(TranslationConfig(data=str(data), source_lang=src, target_lang=tgt))

    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task([str(path)], task=task("de", "en"))
    assert len(models) == 1 and cfg.task.source_lang == "de"
    with pytest.raises(ConfigError, match=r"de-en\.pt translates de->en, but --source-lang en --target-lang de asks "
                                          r"for en->de: .*drop --source-lang en --target-lang de"):
        checkpoint_utils.load_model_ensemble_and_task([str(path)], task=task("en", "de"))
    assert len(checkpoint_utils.load_model_ensemble_and_task([str(path)])[0]) == 1  # no task: nothing to compare


def test_fairseq_names_a_file_that_is_not_a_checkpoint_in_one_line(tmp_path):
    """fairseq-generate --path notes.txt: the plugin's reader explains what fairseq's loader only fails on."""
    from fairseq import checkpoint_utils

    from pet_fairseq.core.errors import InputError
    from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir

    notes = tmp_path / "notes.pt"
    notes.write_text("hello\n")
    with pytest.raises(InputError, match=r"notes\.pt is not a fairseq checkpoint \(torch\.load failed"):
        checkpoint_utils.load_checkpoint_to_cpu(str(notes))
    with pytest.raises(InputError, match=r"checkpoint .*missing\.pt does not exist"):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "missing.pt"))
    data = write_data_dir(tmp_path / "bin", toy_dictionary(40))
    path, _, _ = make_checkpoint(tmp_path / "ok.pt", data, "transformer", "--encoder-layers", "1",
                                 "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
                                 "--encoder-ffn-embed-dim", "16", "--decoder-ffn-embed-dim", "16")
    assert "model" in checkpoint_utils.load_checkpoint_to_cpu(str(path))
