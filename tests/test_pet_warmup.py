"""pet_warmup: simplified targets from the teacher and the student's 4-class loss."""

import math

import pytest
import torch

from pet_fairseq.criterions.pet_warmup import simplified_class_log_probs, warmup_loss
from pet_fairseq.tasks.warmup import simplified_targets
from tests.distill_helpers import distillation, teacher_checkpoint, toy_sample


def test_labels_for_each_of_the_four_classes():
    # vocabulary of 3; gold token is 0 at every position
    probs = torch.tensor([
        [0.2, 0.5, 0.3],  # teacher wrong (top-1 = 1), unsure (0.5 <= 0.6) -> 0
        [0.1, 0.8, 0.1],  # wrong, sure -> 1
        [0.5, 0.3, 0.2],  # right, unsure -> 2
        [0.9, 0.05, 0.05],  # right, sure -> 3
    ])
    labels = simplified_targets(probs.log().unsqueeze(0), torch.zeros(1, 4, dtype=torch.long), 0.6)
    assert labels.tolist() == [[0, 1, 2, 3]]


def test_student_class_probabilities_are_the_products():
    lprobs = torch.tensor([[0.6, 0.3, 0.1]]).log()
    c, f = 0.3, 0.6  # gold token 1: p_correct = 0.3, p_confident = max = 0.6
    expected = torch.tensor([[(1 - c) * (1 - f), (1 - c) * f, c * (1 - f), c * f]])
    q = simplified_class_log_probs(lprobs, torch.tensor([1])).exp()
    torch.testing.assert_close(q, expected)
    assert q.sum().item() == pytest.approx(1.0)


def test_warmup_loss_with_smoothing_and_padding():
    lprobs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]]).log()
    target, labels = torch.tensor([1, 2, 0]), torch.tensor([3, 0, 1])
    mask = torch.tensor([True, True, False])
    q = simplified_class_log_probs(lprobs, target)
    expected = sum(-(0.9 * q[i, labels[i]] + 0.1 * q[i].mean()) for i in range(2))
    assert warmup_loss(lprobs, target, labels, mask, smoothing=0.1).item() == pytest.approx(expected.item(), rel=1e-6)


def test_student_forward_is_inside_autograd(tmp_path):
    data, path, _ = teacher_checkpoint(tmp_path)
    task, student, criterion = distillation(data, path, task="pet_warmup", criterion="pet_warmup",
                                            *("--confidence-threshold", "0.05"))
    student.train()
    sample = toy_sample(task.target_dictionary)
    loss, _, log = criterion(student, sample)
    assert loss.requires_grad
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in task.teacher.parameters())
    # labels logged: the share of tokens the teacher gets right / is sure about
    labels = task.simplified_targets(student, sample)
    mask = sample["target"].ne(task.target_dictionary.pad())
    assert log["teacher_right"].item() == int((labels[mask] >= 2).sum())
    assert log["warmup_loss"].item() == pytest.approx(loss.item())  # token loss weight 0 by default


def test_token_loss_weight_adds_the_ordinary_loss(tmp_path):
    data, path, _ = teacher_checkpoint(tmp_path)
    task, student, criterion = distillation(data, path, "--token-loss-weight", "0.5", "--label-smoothing", "0.1",
                                            task="pet_warmup", criterion="pet_warmup")
    with torch.no_grad():
        loss, _, log = criterion(student.eval(), toy_sample(task.target_dictionary))
    ce, _ = criterion.compute_loss(student, student(**toy_sample(task.target_dictionary)["net_input"]),
                                   toy_sample(task.target_dictionary))
    assert loss.item() == pytest.approx(log["warmup_loss"].item() + 0.5 * ce.item(), rel=1e-5)
    assert math.isfinite(loss.item())


def test_bad_threshold_and_wrong_task_are_errors(tmp_path):
    data, path, _ = teacher_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"--confidence-threshold must be in \(0, 1\), got 1.5"):
        distillation(data, path, "--confidence-threshold", "1.5", task="pet_warmup", criterion="pet_warmup")
    with pytest.raises(ValueError, match="--criterion pet_warmup needs --task pet_warmup"):
        distillation(data, path, criterion="pet_warmup")
