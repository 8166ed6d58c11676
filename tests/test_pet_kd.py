"""pet_kd: loss against a hand-computed reference, padding, layer maps, projections."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from pet_fairseq.criterions.pet_kd import default_layer_map, kd_kl_loss, parse_layer_map
from pet_fairseq.tasks.distillation import forward_with_states
from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir
from tests.distill_helpers import LAYER_MAPS, TEACHER_ARGS, distillation, teacher_checkpoint, toy_sample


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data, path, _ = teacher_checkpoint(tmp_path_factory.mktemp("kd"))
    task, student, criterion = distillation(data, path, *LAYER_MAPS, "--kd-alpha", "0.3", "--kd-temperature", "2",
                                            "--inter-beta", "5", "--label-smoothing", "0.1")
    return task, student.eval(), criterion


def reference_loss(task, student, criterion, sample):
    """The PET KD loss written out token by token (loops on purpose: an independent computation)."""
    s = forward_with_states(student, sample["net_input"])
    t = forward_with_states(task.teacher, sample["net_input"])
    pad, target = task.target_dictionary.pad(), sample["target"]
    V, eps, tau = s.logits.size(-1), 0.1, 2.0
    ce = kl = 0.0
    for b in range(target.size(0)):
        for i in range(target.size(1)):
            if target[b, i] == pad:
                continue
            lp = F.log_softmax(s.logits[b, i].double(), -1)
            eps_i = eps / (V - 1)
            ce += -(1 - eps - eps_i) * lp[target[b, i]] - eps_i * lp.sum()
            p_t = F.softmax(t.logits[b, i].double() / tau, -1)
            kl += (p_t * (p_t.log() - F.log_softmax(s.logits[b, i].double() / tau, -1))).sum()
    inter = []
    src_pad = sample["net_input"]["src_tokens"].eq(task.source_dictionary.pad())
    for (ti, si), proj in zip(criterion.encoder_map, criterion.encoder_projections):
        total = 0.0
        for b in range(src_pad.size(0)):
            for n in range(src_pad.size(1)):
                if not src_pad[b, n]:
                    hs = F.layer_norm(proj(s.encoder_states[si][n, b]).double(), (32,))
                    ht = F.layer_norm(t.encoder_states[ti][n, b].double(), (32,))
                    total += ((hs - ht) ** 2).mean()
        inter.append(total)
    for (ti, si), proj in zip(criterion.decoder_map, criterion.decoder_projections):
        total = 0.0
        for b in range(target.size(0)):
            for n in range(target.size(1)):
                if target[b, n] != pad:
                    hs = F.layer_norm(proj(s.decoder_states[si][n, b]).double(), (32,))
                    ht = F.layer_norm(t.decoder_states[ti][n, b].double(), (32,))
                    total += ((hs - ht) ** 2).mean()
        inter.append(total)
    inter = sum(inter) / len(inter)
    return (1 - 0.3) * ce + 0.3 * tau**2 * kl + 5 * inter, kl, inter


def test_kd_loss_equals_hand_computed_reference(setup):
    task, student, criterion = setup
    sample = toy_sample(task.target_dictionary)
    assert sample["target"].eq(task.target_dictionary.pad()).any()  # the batch really has padding
    assert sample["net_input"]["src_tokens"].eq(task.source_dictionary.pad()).any()
    with torch.no_grad():
        loss, sample_size, log = criterion(student, sample)
        ref, ref_kl, ref_inter = reference_loss(task, student, criterion, sample)
    assert sample_size == sample["ntokens"]
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert log["kd_loss"].item() == pytest.approx(ref_kl.item(), rel=1e-5)
    assert log["inter_loss"].item() == pytest.approx(ref_inter.item(), rel=1e-5)
    assert ref_kl > 0 and ref_inter > 0


def test_pad_positions_contribute_nothing_to_kl():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    before = kd_kl_loss(student, teacher, mask, 3.0)
    student[~mask], teacher[~mask] = 100 * torch.randn(2, 11), -50 * torch.randn(2, 11)
    assert kd_kl_loss(student, teacher, mask, 3.0).item() == pytest.approx(before.item(), rel=1e-6)
    assert kd_kl_loss(teacher, teacher, mask, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_projections_are_training_only_and_shaped_student_to_teacher(setup):
    _, student, criterion = setup
    assert [tuple(p.weight.shape) for p in criterion.encoder_projections] == [(32, 24), (32, 24)]
    assert [tuple(p.weight.shape) for p in criterion.decoder_projections] == [(32, 16), (32, 16)]
    assert not any("projection" in k and "output_projection" not in k for k in student.state_dict())
    assert set(criterion.state_dict()) == {f"{side}_projections.{i}.weight" for side in ("encoder", "decoder") for i in (0, 1)}


def test_loss_terms_are_logged_for_fairseq(setup):
    task, student, criterion = setup
    with torch.no_grad():
        _, _, log = criterion(student, toy_sample(task.target_dictionary))
    from fairseq.logging import metrics

    with metrics.aggregate() as agg:
        type(criterion).reduce_metrics([log])
    values = agg.get_smoothed_values()
    for key in ("loss", "nll_loss", "ppl", "kd_loss", "inter_loss", "ce_loss"):
        assert key in values
    assert values["kd_loss"] == pytest.approx(log["kd_loss"].item() / log["sample_size"] / math.log(2), abs=1e-3)


@pytest.mark.parametrize("text, message", [
    ("2:1,4", "'4' is not TEACHER:STUDENT"),
    ("a:b", "'a:b' is not TEACHER:STUDENT"),
    ("7:1", "pair 7:1 is out of range; the teacher has 6 layers and the student 4"),
    ("2:5", "pair 2:5 is out of range"),
    ("1:1,1:1", "pair 1:1 is given twice"),
    ("2:1,4:2,2:1", "pair 2:1 is given twice"),
])
def test_invalid_layer_maps_are_clear_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_layer_map(text, 6, 4, "--encoder-layer-map")


def test_layer_map_parses_the_papers_default():
    assert parse_layer_map("2:1,4:2,6:4", 6, 4, "x") == [(2, 1), (4, 2), (6, 4)]
    assert parse_layer_map("", 6, 4, "x") == []


@pytest.mark.parametrize("teacher, student, expected", [
    (6, 4, [(1, 1), (3, 2), (4, 3), (6, 4)]),
    (3, 4, [(1, 1), (2, 2), (3, 4)]),
    (4, 4, [(1, 1), (2, 2), (3, 3), (4, 4)]),
    (2, 6, [(1, 3), (2, 6)]),
    (12, 3, [(4, 1), (8, 2), (12, 3)]),
])
def test_default_layer_map_is_evenly_spaced_over_the_actual_depths(teacher, student, expected):
    assert default_layer_map(teacher, student) == expected
    assert parse_layer_map("auto", teacher, student, "x") == expected


def test_default_layer_map_adapts_to_a_3_layer_teacher_and_a_4_deep_student(tmp_path, caplog):
    data = write_data_dir(tmp_path / "data", toy_dictionary(60))
    args = [*TEACHER_ARGS, "--encoder-layers", "3", "--decoder-layers", "3"]  # the last value of an option wins
    path, _, _ = make_checkpoint(tmp_path / "teacher.pt", data, "transformer", *args, seed=11)
    with caplog.at_level(logging.INFO, logger="pet_fairseq.criterions.pet_kd"):
        task, student, criterion = distillation(data, path, "--inter-beta", "1")  # no map given: the default
    assert task.student_shape.encoder_layers == task.student_shape.decoder_layers == 4
    assert criterion.encoder_map == criterion.decoder_map == [(1, 1), (2, 2), (3, 4)]
    assert len(criterion.encoder_projections) == len(criterion.decoder_projections) == 3
    assert "--encoder-layer-map auto: 1:1,2:2,3:4 for a 3-layer teacher and a 4-deep student" in caplog.text
    assert "--decoder-layer-map auto: 1:1,2:2,3:4" in caplog.text
    loss, _, log = criterion(student.train(), toy_sample(task.target_dictionary))
    assert torch.isfinite(loss) and log["inter_loss"] > 0


def test_an_explicit_empty_map_still_means_no_intermediate_loss(tmp_path):
    data, path, _ = teacher_checkpoint(tmp_path)
    task, student, criterion = distillation(data, path, "--inter-beta", "1", "--encoder-layer-map", "",
                                            "--decoder-layer-map", "")
    assert criterion.encoder_map == criterion.decoder_map == [] and not list(criterion.parameters())
    _, _, log = criterion(student, toy_sample(task.target_dictionary))
    assert log["inter_loss"] == 0


def test_warmup_phase_uses_simplified_targets_then_kd(tmp_path):
    """--warmup-fraction 0.3 of --max-update 10: updates 0-2 train on PET's warm-up loss, then KD."""
    from pet_fairseq.criterions.pet_warmup import warmup_loss
    from pet_fairseq.tasks.warmup import simplified_targets

    data, path, _ = teacher_checkpoint(tmp_path)
    task, student, criterion = distillation(data, path, *LAYER_MAPS, "--warmup-fraction", "0.3", "--max-update", "10",
                                            "--confidence-threshold", "0.2", "--token-loss-weight", "0.5")
    student.eval()
    sample = toy_sample(task.target_dictionary)
    assert criterion.warmup_updates == 3
    criterion.train()
    criterion.set_update_num(2)
    loss, _, log = criterion(student, sample)
    lprobs, target = criterion.get_lprobs_and_target(student, student(**sample["net_input"]), sample)
    labels = simplified_targets(task.teacher_outputs(student, sample).logits, sample["target"], 0.2).reshape(-1)
    expected = warmup_loss(lprobs, target, labels, target.ne(task.target_dictionary.pad()))
    ce, _ = criterion.compute_loss(student, student(**sample["net_input"]), sample)
    assert "warmup_loss" in log and "kd_loss" not in log
    assert torch.allclose(loss, expected + 0.5 * ce, atol=1e-4)
    criterion.set_update_num(3)
    _, _, log = criterion(student, sample)
    assert "kd_loss" in log and "warmup_loss" not in log
    criterion.eval()  # validation without a teacher cache reports the KD objective
    criterion.set_update_num(0)
    assert "kd_loss" in criterion(student, sample)[2]


def test_warmup_fraction_needs_an_update_budget(tmp_path):
    data, path, _ = teacher_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="pass --max-update N"):
        distillation(data, path, *LAYER_MAPS, "--warmup-fraction", "0.1")
    with pytest.raises(ValueError, match=r"--warmup-fraction must be in \[0, 1\)"):
        distillation(data, path, *LAYER_MAPS, "--warmup-fraction", "1.5", "--max-update", "10")


def test_defaults_are_the_studys_recipe_and_beta_zero_trains_no_projections(tmp_path, caplog):
    """α 0.5, τ 1, β 2 with automatic maps (README's study); β 0 means no pairs, no projections, and a warning."""
    data, path, _ = teacher_checkpoint(tmp_path)
    _, _, criterion = distillation(data, path)
    assert (criterion.alpha, criterion.temperature, criterion.beta, criterion.warmup_updates) == (0.5, 1.0, 2.0, 0)
    assert criterion.encoder_map == [(1, 2), (2, 4)] and len(criterion.encoder_projections) == 2  # 2 teacher layers, 4 depths
    _, _, off = distillation(data, path, "--inter-beta", "0")
    assert off.encoder_map == off.decoder_map == [] and not list(off.parameters())
    with caplog.at_level(logging.WARNING, logger="pet_fairseq.criterions.pet_kd"):
        distillation(data, path, "--inter-beta", "0", *LAYER_MAPS)
    assert "--inter-beta 0: the layer maps given are not used" in caplog.text


def test_resuming_with_a_teacher_of_another_width_names_the_kd_projections(tmp_path):
    data, teacher, _ = teacher_checkpoint(tmp_path)
    _, _, criterion = distillation(data, teacher, *LAYER_MAPS)
    saved = {k: torch.zeros(48, v.shape[1]) for k, v in criterion.state_dict().items()}  # a width-48 teacher's
    with pytest.raises(ValueError, match=r"KD projections for a teacher of width 48 .* this run's teacher has width 32"):
        criterion.load_state_dict(saved)
    with pytest.raises(ValueError, match="resume with the same --inter-beta and layer maps"):
        criterion.load_state_dict({})
    criterion.load_state_dict({k: v.clone() for k, v in criterion.state_dict().items()})  # the same teacher resumes
