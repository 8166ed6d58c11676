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
