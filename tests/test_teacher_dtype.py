"""--teacher-dtype: a half-precision teacher next to an fp32 student, and a teacher following the student's dtype."""

from __future__ import annotations

import pytest
import torch

from tests.distill_helpers import LAYER_MAPS, distillation, teacher_checkpoint, toy_sample

KD = [*LAYER_MAPS, "--kd-alpha", "0.5", "--kd-temperature", "2", "--inter-beta", "5"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data, path, _ = teacher_checkpoint(tmp_path_factory.mktemp("teacher_dtype"))
    return data, path


def build(checkpoint, teacher_dtype: str):
    data, path = checkpoint
    return distillation(data, path, *KD, "--teacher-dtype", teacher_dtype)


@pytest.mark.parametrize("name,dtype,tolerance", [("bf16", torch.bfloat16, 3e-2), ("fp16", torch.float16, 4e-3)])
def test_half_teacher_outputs_are_close_to_the_fp32_teacher(checkpoint, name, dtype, tolerance):
    task32, student, _ = build(checkpoint, "fp32")
    task16, _, _ = build(checkpoint, name)
    sample = toy_sample(task32.target_dictionary, n=6)
    ref = task32.teacher_outputs(student, sample)
    half = task16.teacher_outputs(student, sample)  # the student stays fp32
    assert next(task16.teacher.parameters()).dtype == dtype and half.logits.dtype == dtype
    assert next(student.parameters()).dtype == torch.float32
    scale = ref.logits.abs().max().item()
    assert (half.logits.float() - ref.logits).abs().max().item() <= tolerance * max(scale, 1.0)
    for a, b in zip(half.decoder_states + half.encoder_states, ref.decoder_states + ref.encoder_states):
        assert (a.float() - b).abs().max().item() <= tolerance * max(b.abs().max().item(), 1.0)


def test_bf16_teacher_trains_an_fp32_student_with_fp32_losses(checkpoint):
    task32, student32, criterion32 = build(checkpoint, "fp32")
    task16, student, criterion = build(checkpoint, "bf16")
    criterion.load_state_dict(criterion32.state_dict())
    student.load_state_dict(student32.state_dict())
    sample = toy_sample(task16.target_dictionary, n=6, seed=3)
    reference, _, _ = criterion32(student32, sample)

    task16.teacher_outputs(student, sample)  # casts the teacher to bf16
    teacher_before = {k: v.clone() for k, v in task16.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    optimizer = torch.optim.Adam([*student.parameters(), *criterion.parameters()], lr=1e-2)
    student.train()
    for step in range(2):
        optimizer.zero_grad()
        loss, _, log = criterion(student, sample)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        if step == 0:  # same weights as the fp32-teacher run: the losses differ only by the teacher's rounding
            assert loss.item() == pytest.approx(reference.item(), rel=1e-2)
            assert log["kd_loss"].dtype == log["inter_loss"].dtype == torch.float32
        loss.backward()
        grads = [p.grad for p in [*student.parameters(), *criterion.parameters()] if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        optimizer.step()
    assert next(task16.teacher.parameters()).dtype == torch.bfloat16
    assert all(torch.equal(teacher_before[k], v) for k, v in task16.teacher.state_dict().items())
    assert all(p.grad is None for p in task16.teacher.parameters())
    assert any(not torch.equal(student_before[k], v) for k, v in student.state_dict().items())


def test_auto_follows_the_student_and_fp32_keeps_a_full_precision_teacher(checkpoint):
    task, student, criterion = build(checkpoint, "auto")
    student.to(torch.bfloat16)
    criterion.to(torch.bfloat16)  # fairseq's trainer casts both with --bf16
    sample = toy_sample(task.target_dictionary)
    assert task.teacher_outputs(student, sample).logits.dtype == torch.bfloat16
    loss, _, _ = criterion(student, sample)
    assert torch.isfinite(loss)

    task, student, criterion = build(checkpoint, "fp32")
    student.to(torch.bfloat16)
    criterion.to(torch.bfloat16)
    assert task.teacher_outputs(student, sample).logits.dtype == torch.float32
    loss, _, _ = criterion(student, sample)
    assert torch.isfinite(loss)


def test_a_missing_half_kernel_names_the_option_to_change(checkpoint, monkeypatch):
    task, student, _ = build(checkpoint, "fp16")

    def no_half_kernel(*args, **kwargs):
        raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'")

    task.teacher_outputs(student, toy_sample(task.target_dictionary))  # casts the teacher
    monkeypatch.setattr(task.teacher.encoder, "forward", no_half_kernel)
    with pytest.raises(RuntimeError, match=r"cannot run in torch.float16 on cpu.*--teacher-dtype fp32"):
        task.teacher_outputs(student, toy_sample(task.target_dictionary))
