"""Cached teacher distributions (pet_fairseq.core.teacher_cache, python -m pet_fairseq.kdcache, pet_kd --teacher-cache)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fairseq.data import Dictionary, indexed_dataset

from pet_fairseq.core.teacher_cache import TeacherCache, TeacherCacheError
from pet_fairseq.criterions.pet_kd import kd_kl_loss, kd_topk_kl_loss
from pet_fairseq.kdcache import cli
from tests.conftest import make_checkpoint
from tests.distill_helpers import TEACHER_ARGS, distillation, teacher_checkpoint

SENTENCES = 37  # not a multiple of any batch size used below: the last batch is partial


def write_split(data: Path, split: str = "train", n: int = SENTENCES, seed: int = 0) -> None:
    """A binarized de-en split of random sentences of varied lengths over the data-bin's dictionary."""
    d = Dictionary.load(str(data / "dict.en.txt"))
    g = torch.Generator().manual_seed(seed)
    for lang, (low, high) in (("de", (2, 12)), ("en", (1, 10))):
        builder = indexed_dataset.make_builder(str(data / f"{split}.de-en.{lang}.bin"), impl="mmap", vocab_size=len(d))
        for _ in range(n):
            length = int(torch.randint(low, high, (1,), generator=g))
            builder.add_item(torch.cat([torch.randint(d.nspecial, len(d), (length,), generator=g),
                                        torch.tensor([d.eos()])]))
        builder.finalize(str(data / f"{split}.de-en.{lang}.idx"))
        g.manual_seed(seed + 1)


@pytest.fixture()
def setup(tmp_path):
    data, teacher, _ = teacher_checkpoint(tmp_path)
    write_split(data)
    return data, teacher


def build_cache(data: Path, teacher: Path, out: Path, *extra: str) -> int:
    return cli.main([str(data), "--teacher", str(teacher), "--out", str(out), "--max-tokens", "60", "--num-shards", "3",
                     *extra])


def train_batches(task, max_tokens: int):
    """Every training batch as fairseq-train builds it (the last one partial)."""
    task.load_dataset("train")
    itr = task.get_batch_iterator(task.dataset("train"), max_tokens=max_tokens, seed=1, num_workers=0)
    return list(itr.next_epoch_itr(shuffle=True))


def test_cached_top_k_equals_the_online_teachers_on_real_batches(setup, tmp_path):
    data, teacher = setup
    assert build_cache(data, teacher, tmp_path / "cache", "--k", "5") == 0
    task, student, _ = distillation(data, teacher, "--teacher-cache", str(tmp_path / "cache"), "--inter-beta", "0")
    batches = train_batches(task, max_tokens=45)  # other batches and padding than the build's
    assert len(batches) > 3 and sum(len(b["id"]) for b in batches) == SENTENCES
    assert len({len(b["id"]) for b in batches}) > 1
    for sample in batches:
        mask = sample["target"].ne(task.tgt_dict.pad())
        assert not mask.all()  # padding inside the batch
        tokens, logprobs = task.cached_teacher(sample)
        online = F.log_softmax(task.teacher_outputs(student, sample).logits.float(), dim=-1).topk(5, dim=-1)
        assert torch.equal(tokens[mask], online.indices[mask])
        torch.testing.assert_close(logprobs[mask], online.values[mask], rtol=1e-3, atol=1e-3)
        assert tokens[~mask].eq(0).all() and logprobs[~mask].eq(0).all()


def test_top_k_loss_is_the_online_kl_when_k_covers_the_vocabulary():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 7, 40, generator=g), torch.randn(3, 7, 40, generator=g) * 3
    mask = torch.rand(3, 7, generator=g) > 0.3
    for tau in (1.0, 4.0):
        full = F.log_softmax(teacher, dim=-1).topk(40, dim=-1)
        expected = kd_kl_loss(student, teacher, mask, tau)
        torch.testing.assert_close(kd_topk_kl_loss(student, full.indices, full.values, mask, tau), expected)
        top = F.log_softmax(teacher, dim=-1).topk(4, dim=-1)  # truncated: a different, renormalised target
        assert not torch.allclose(kd_topk_kl_loss(student, top.indices, top.values, mask, tau), expected)


@pytest.mark.parametrize("tau", ["1", "2"])  # τ = 1 shares the CE term's log-softmax; τ = 2 computes its own
def test_cached_and_online_kd_losses_agree_when_k_covers_the_vocabulary(setup, tmp_path, tau):
    data, teacher = setup
    vocab = len(Dictionary.load(str(data / "dict.en.txt")))
    assert build_cache(data, teacher, tmp_path / "cache", "--k", str(vocab)) == 0
    cached_task, cached_student, cached = distillation(data, teacher, "--teacher-cache", str(tmp_path / "cache"),
                                                       "--inter-beta", "0", "--kd-alpha", "0.5", "--kd-temperature", tau)
    online_task, online_student, online = distillation(data, teacher, "--inter-beta", "0", "--kd-alpha", "0.5",
                                                       "--kd-temperature", tau)
    online_task.load_dataset("train")
    for sample in train_batches(cached_task, max_tokens=80):
        cached.train(), online.train()
        cached_student.train(False), online_student.train(False)  # no dropout: the same student output
        _, _, a = cached(cached_student, sample)
        _, _, b = online(online_student, sample)
        assert float(a["kd_loss"]) == pytest.approx(float(b["kd_loss"]), rel=2e-3)
        assert float(a["nll_loss"]) == pytest.approx(float(b["nll_loss"]), rel=1e-6)
        assert float(a["ce_loss"]) == pytest.approx(float(b["ce_loss"]), rel=1e-6)
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=2e-3)


def test_validation_with_a_cache_reports_the_ce_without_running_the_teacher(setup, tmp_path):
    data, teacher = setup
    assert build_cache(data, teacher, tmp_path / "cache", "--k", "4") == 0
    cache = ("--teacher-cache", str(tmp_path / "cache"), "--inter-beta", "0", "--kd-alpha", "0.5")
    task, student, criterion = distillation(data, teacher, *cache)
    sample = train_batches(task, max_tokens=80)[0]
    student.train(False)
    criterion.train(False)  # validation

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran during validation")

    task.teacher_outputs = no_teacher
    loss, _, log = criterion(student, sample)
    ce, nll = criterion.compute_loss(student, student(**sample["net_input"]), sample)
    assert "kd_loss" not in log and float(loss) == pytest.approx(float(ce)) == pytest.approx(float(log["ce_loss"]))
    assert float(log["nll_loss"]) == pytest.approx(float(nll))
    _, online_student, asked = distillation(data, teacher, *cache, "--kd-validation", "kd")
    asked.train(False)
    _, _, log = asked(student, sample)  # the teacher runs: the training objective, KD term included
    assert float(log["kd_loss"]) > 0 and float(log["loss"]) == pytest.approx(
        0.5 * float(log["ce_loss"]) + 0.5 * float(log["kd_loss"]), rel=1e-5)


def test_cache_records_what_it_was_made_from_and_the_mass_it_keeps(setup, tmp_path, capsys):
    data, teacher = setup
    assert build_cache(data, teacher, tmp_path / "cache", "--k", "4") == 0
    cache = TeacherCache.open(tmp_path / "cache")
    assert cache.k == 4 and cache.meta["sentences"] == SENTENCES
    assert cache.tokens.dtype == np.int32 and cache.logprobs.dtype == np.float16 and cache.tokens.shape[1] == 4
    lengths = np.diff(cache.offsets)
    targets = indexed_dataset.MMapIndexedDataset(str(data / "train.de-en.en"))
    assert lengths.tolist() == [len(targets[i]) for i in range(SENTENCES)]
    mass = cache.meta["mean_teacher_mass_in_top_k"]
    assert list(mass) == ["1", "2", "4"] and 0 < mass["1"] < mass["2"] < mass["4"] <= 1
    expected = float(np.exp(cache.logprobs.astype(np.float64)).sum(axis=1).mean())
    assert mass["4"] == pytest.approx(expected, rel=2e-3)
    assert "mean teacher mass kept: top-1" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "shards").exists()


def test_states_none_is_the_cache_without_states_and_a_finished_one_is_reused_without_the_teacher(setup, tmp_path,
                                                                                                  monkeypatch, caplog):
    data, teacher = setup
    assert build_cache(data, teacher, tmp_path / "cache", "--k", "4") == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()}
    loads = []
    monkeypatch.setattr(cli, "load_teacher", lambda *a, **k: loads.append(a) or pytest.fail("the teacher was loaded"))
    caplog.set_level(logging.INFO)
    assert build_cache(data, teacher, tmp_path / "cache", "--k", "4", "--encoder-states", "none",
                       "--decoder-states", "None") == 0
    assert loads == [] and {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()} == before
    assert "already holds this teacher cache (same teacher, corpus, k and layers); reusing it" in caplog.text


def test_a_cache_from_another_teacher_or_corpus_is_refused(setup, tmp_path):
    data, teacher = setup
    assert build_cache(data, teacher, tmp_path / "cache", "--k", "4") == 0
    other, _, _ = make_checkpoint(tmp_path / "other.pt", data, "transformer", *TEACHER_ARGS, seed=12)
    with pytest.raises(TeacherCacheError, match="made from another teacher .*rebuild it"):
        distillation(data, other, "--teacher-cache", str(tmp_path / "cache"), "--inter-beta", "0")
    write_split(data, seed=7)  # the same file names, other sentences
    with pytest.raises(TeacherCacheError, match=r"another corpus \(train split of"):
        distillation(data, teacher, "--teacher-cache", str(tmp_path / "cache"), "--inter-beta", "0")


def test_a_cache_whose_lengths_differ_from_the_dataset_is_refused(setup, tmp_path):
    data, teacher = setup
    assert build_cache(data, teacher, tmp_path / "cache", "--k", "4") == 0
    cache = TeacherCache.open(tmp_path / "cache")
    sizes = np.diff(cache.offsets).copy()
    sizes[5] += 1
    with pytest.raises(TeacherCacheError, match="sentence 5 differs in length"):
        cache.check_lengths(sizes)
    with pytest.raises(TeacherCacheError, match="36 sentences, the cache 37"):
        cache.check_lengths(sizes[:-1])


def test_unfinished_or_missing_caches_and_bad_options_are_refused(setup, tmp_path, capsys):
    data, teacher = setup
    with pytest.raises(TeacherCacheError, match="does not exist; build it with python -m pet_fairseq.kdcache"):
        TeacherCache.open(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(TeacherCacheError, match="is unfinished"):
        TeacherCache.open(tmp_path / "half")
    for argv, message in ((["--k", "0"], "--k must be >= 1"), (["--num-shards", "0"], "--num-shards must be >= 1"),
                          (["--shard-id", "3"], "--shard-id must be in 0..2"), (["--k", "999"], "exceeds the target vocabulary")):
        assert build_cache(data, teacher, tmp_path / "c", *argv) == 2
        assert message in capsys.readouterr().err
    assert build_cache(data, teacher, tmp_path / "cache", "--k", "4") == 0
    with pytest.raises(ValueError, match=r"holds no hidden states of the teacher's encoder layer 1, encoder layer 2, "
                                         r"decoder layer 1, decoder layer 2 \(it holds: none\), which the "
                                         r"intermediate-layer loss \(--inter-beta\) maps: rebuild it with "
                                         r"--encoder-states 1,2 --decoder-states 1,2, or pass --inter-beta 0"):
        distillation(data, teacher, "--teacher-cache", str(tmp_path / "cache"))
    assert build_cache(data, teacher, tmp_path / "enc", "--k", "4", "--encoder-states", "all") == 0
    with pytest.raises(ValueError, match=r"decoder layer 1, decoder layer 2 \(it holds: encoder 1,2, decoder none\)"):
        distillation(data, teacher, "--teacher-cache", str(tmp_path / "enc"))
    assert build_cache(data, teacher, tmp_path / "c", "--encoder-states", "1,5") == 2
    assert "--encoder-states '1,5': '5' is not a layer of the teacher's 2" in capsys.readouterr().err


def interrupt_on_shard(monkeypatch, shard: int):
    """Make the build's ``write_shard`` raise KeyboardInterrupt (Ctrl-C) at ``shard``; returns the real one."""
    real = cli.write_shard

    def dies(work, shard_id, *args, **kwargs):
        if shard_id == shard:
            raise KeyboardInterrupt
        return real(work, shard_id, *args, **kwargs)

    monkeypatch.setattr(cli, "write_shard", dies)
    return real


def test_a_killed_build_resumes_to_identical_files(setup, tmp_path, monkeypatch, caplog):
    data, teacher = setup
    assert build_cache(data, teacher, tmp_path / "straight", "--k", "4") == 0
    real = interrupt_on_shard(monkeypatch, 1)
    assert build_cache(data, teacher, tmp_path / "resumed", "--k", "4") == 130  # Ctrl-C: one line, status 130
    assert not (tmp_path / "resumed" / "cache.json").exists()
    with pytest.raises(TeacherCacheError, match="is unfinished"):
        TeacherCache.open(tmp_path / "resumed")
    monkeypatch.setattr(cli, "write_shard", real)
    with caplog.at_level("INFO"):
        assert build_cache(data, teacher, tmp_path / "resumed", "--k", "4") == 0
    assert "1 of 3 shards already finished" in caplog.text
    for name in ("offsets.npy", "tokens.npy", "logprobs.npy"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_shards_of_another_k_are_refused(setup, tmp_path, capsys):
    data, teacher = setup
    assert build_cache(data, teacher, tmp_path / "cache", "--k", "4", "--shard-id", "0") == 0
    assert build_cache(data, teacher, tmp_path / "cache", "--k", "5") == 2
    assert "made with a different k" in capsys.readouterr().err


def test_a_finished_cache_of_another_k_is_replaced_only_with_force(setup, tmp_path, capsys):
    """A finished cache of another k is kept: replacing it needs --force."""
    data, teacher = setup
    out = tmp_path / "cache"
    assert build_cache(data, teacher, out, "--k", "4") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert build_cache(data, teacher, out, "--k", "8") == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --out {out} holds a finished teacher cache made with --k 4 (this run asks for --k 8); pass --force "
        "to replace it, or choose another --out")
    other, _, _ = make_checkpoint(tmp_path / "other.pt", data, "transformer", *TEACHER_ARGS, seed=12)
    assert build_cache(data, other, out, "--k", "4") == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --out {out} holds a finished teacher cache made with another teacher; pass --force to replace it, "
        "or choose another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert build_cache(data, teacher, out, "--k", "4") == 0  # the same cache again: nothing to refuse
    assert build_cache(data, teacher, out, "--k", "8", "--force") == 0
    assert TeacherCache.open(out).k == 8


def test_max_tokens_below_the_longest_sentence_is_one_line(setup, tmp_path, capsys):
    """A --max-tokens below the longest sentence is one line naming the length to pass, not fairseq's assertion."""
    data, teacher = setup
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    longest = max(max(len(indexed_dataset.MMapIndexedDataset(str(data / f"train.de-en.{lang}"))[i])
                      for i in range(SENTENCES)) for lang in ("de", "en"))
    assert cli.main([str(data), "--teacher", str(teacher), "--out", str(tmp_path / "c"), "--max-tokens",
                     str(longest - 1)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --max-tokens {longest - 1} is below the longest sentence of the train split ({longest} tokens): a "
        f"batch must hold it; pass --max-tokens {longest} or more")
    assert not (tmp_path / "c").exists() and {p.name: p.read_bytes() for p in data.iterdir()} == before


def test_cached_hidden_states_are_the_online_teachers_and_give_its_intermediate_loss(setup, tmp_path):
    """A cache with hidden states: every mapped layer equals the online teacher's at the non-pad positions of real
    batches (left-padded sources, right-padded targets, a partial last batch), and the whole pet_kd loss with the
    intermediate term equals the online one when k covers the vocabulary (fp16 states: to 1e-3)."""
    data, teacher = setup
    vocab = len(Dictionary.load(str(data / "dict.en.txt")))
    out = tmp_path / "cache"
    assert build_cache(data, teacher, out, "--k", str(vocab), "--encoder-states", "all", "--decoder-states", "0,2") == 0
    cache = TeacherCache.open(out)
    assert cache.states_held == {"encoder": [1, 2], "decoder": [0, 2]}
    assert cache.state_rows["encoder_1"].dtype == np.float16 and cache.state_rows["encoder_1"].shape[1] == 32
    assert len(cache.state_rows["decoder_2"]) == len(cache.tokens)
    maps = ("--encoder-layer-map", "1:2,2:4", "--decoder-layer-map", "2:4")  # within what the cache holds
    common = ("--inter-beta", "2", "--kd-alpha", "0.5", *maps)
    cached_task, cached_student, cached = distillation(data, teacher, "--teacher-cache", str(out), *common)
    online_task, online_student, online = distillation(data, teacher, *common)
    online_task.load_dataset("train")
    batches = train_batches(cached_task, max_tokens=45)
    assert sum(len(b["id"]) for b in batches) == SENTENCES
    padded = 0
    for sample in batches:
        source_mask = sample["net_input"]["src_tokens"].ne(cached_task.src_dict.pad())
        assert source_mask[:, -1].all()  # left-padded: every sentence ends at the last column
        padded += int(not source_mask.all())
        states = cached_task.cached_teacher_states(sample, [1, 2], [0, 2])
        truth = online_task.teacher_outputs(online_student, sample)
        for layer in (1, 2):
            torch.testing.assert_close(states.encoder_states[layer].transpose(0, 1)[source_mask],
                                       truth.encoder_states[layer].transpose(0, 1)[source_mask], rtol=1e-3, atol=2e-3)
        target_mask = sample["target"].ne(cached_task.tgt_dict.pad())
        for layer in (0, 2):
            torch.testing.assert_close(states.decoder_states[layer].transpose(0, 1)[target_mask],
                                       truth.decoder_states[layer].transpose(0, 1)[target_mask], rtol=1e-3, atol=2e-3)
        cached.train(), online.train()
        cached_student.train(False), online_student.train(False)
        online.load_state_dict(cached.state_dict())  # the same KD projections
        _, _, a = cached(cached_student, sample)
        _, _, b = online(online_student, sample)
        assert float(a["inter_loss"]) > 0
        assert float(a["inter_loss"]) == pytest.approx(float(b["inter_loss"]), rel=1e-3)
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=2e-3)
    assert padded > 0
    with pytest.raises(TeacherCacheError, match="decoder layer 1"):  # the auto map asks for decoder layer 1 too
        distillation(data, teacher, "--teacher-cache", str(out), "--inter-beta", "2")


def test_a_killed_build_with_hidden_states_resumes_to_identical_files(setup, tmp_path, monkeypatch, capsys):
    data, teacher = setup
    states = ("--k", "4", "--encoder-states", "2", "--decoder-states", "1")
    assert build_cache(data, teacher, tmp_path / "straight", *states) == 0
    real = interrupt_on_shard(monkeypatch, 2)
    assert build_cache(data, teacher, tmp_path / "resumed", *states) == 130
    monkeypatch.setattr(cli, "write_shard", real)
    assert build_cache(data, teacher, tmp_path / "resumed", "--k", "4", "--encoder-states", "1") == 2
    assert "made with a different states" in capsys.readouterr().err  # the finished shards hold other layers
    assert build_cache(data, teacher, tmp_path / "resumed", *states) == 0
    names = sorted(p.name for p in (tmp_path / "straight").glob("*.npy"))
    assert names == ["decoder_1.npy", "encoder_2.npy", "logprobs.npy", "offsets.npy", "src_offsets.npy", "tokens.npy"]
    for name in names:
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    capsys.readouterr()
    assert build_cache(data, teacher, tmp_path / "straight", "--k", "4") == 2  # would drop the states: --force
    assert "made with other --encoder-states/--decoder-states" in capsys.readouterr().err
