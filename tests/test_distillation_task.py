"""pet_distillation: the task that owns a frozen teacher."""

import pytest
import torch

from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir
from tests.distill_helpers import LAYER_MAPS, TEACHER_ARGS, distillation, teacher_checkpoint, toy_sample


@pytest.fixture()
def setup(tmp_path):
    data, path, teacher = teacher_checkpoint(tmp_path)
    task, student, criterion = distillation(data, path, *LAYER_MAPS)
    return data, path, teacher, task, student, criterion


def test_teacher_is_loaded_frozen_and_outside_the_student(setup):
    data, path, saved_teacher, task, student, criterion = setup
    teacher = task.teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for name, tensor in saved_teacher.state_dict().items():
        assert torch.equal(teacher.state_dict()[name], tensor), name
    student_ids = {id(p) for p in [*student.parameters(), *criterion.parameters()]}
    assert not student_ids & {id(p) for p in teacher.parameters()}
    assert not any("teacher" in k for k in [*student.state_dict(), *criterion.state_dict()])


def test_teacher_outputs_are_computed_without_gradients(setup):
    *_, task, student, _ = setup
    out = task.teacher_outputs(student, toy_sample(task.target_dictionary))
    assert not out.logits.requires_grad
    assert len(out.encoder_states) == len(out.decoder_states) == 3  # embeddings + 2 layers
    assert out.logits.shape[-1] == len(task.target_dictionary)


def test_teacher_follows_the_students_dtype(setup):
    *_, task, student, _ = setup
    student.double()
    out = task.teacher_outputs(student, toy_sample(task.target_dictionary))
    assert out.logits.dtype == torch.float64 and next(task.teacher.parameters()).dtype == torch.float64


def test_optimizer_step_changes_student_not_teacher(setup):
    *_, task, student, criterion = setup
    before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    student.train()
    optimizer = torch.optim.Adam([*student.parameters(), *criterion.parameters()], lr=1e-2)
    loss, _, _ = criterion(student, toy_sample(task.target_dictionary))
    loss.backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in task.teacher.state_dict().items())
    assert all(p.grad is None for p in task.teacher.parameters())
    changed = [k for k, v in student.state_dict().items() if not torch.equal(student_before[k], v)]
    assert "encoder.unique_layers.0.self_attn.q_proj.weight" in changed and "decoder.embed_tokens.weight" in changed


def test_missing_or_unreadable_teacher_is_a_clear_error(tmp_path):
    data = write_data_dir(tmp_path / "data", toy_dictionary(60))
    with pytest.raises(FileNotFoundError, match="teacher checkpoint .*nope.pt' does not exist"):
        distillation(data, tmp_path / "nope.pt", *LAYER_MAPS)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt' is not a readable fairseq checkpoint"):
        distillation(data, junk, *LAYER_MAPS)


def test_dictionary_mismatch_names_the_dictionary(tmp_path):
    teacher_data = write_data_dir(tmp_path / "tdata", toy_dictionary(60))
    path, _, _ = make_checkpoint(tmp_path / "teacher.pt", teacher_data, "transformer", *TEACHER_ARGS)
    other = toy_dictionary(60)
    other.symbols[10], other.symbols[11] = other.symbols[11], other.symbols[10]
    other.indices = {s: i for i, s in enumerate(other.symbols)}
    student_data = tmp_path / "sdata"
    student_data.mkdir()
    toy_dictionary(60).save(str(student_data / "dict.de.txt"))
    other.save(str(student_data / "dict.en.txt"))
    with pytest.raises(ValueError, match=r"teacher's target dictionary .* differs .* at index 10: 'w\d+' vs 'w\d+'.*--srcdict/--tgtdict"):
        distillation(student_data, path, *LAYER_MAPS)


def test_teacher_for_the_other_direction_is_rejected(tmp_path):
    data = write_data_dir(tmp_path / "data", toy_dictionary(60))
    path, _, _ = make_checkpoint(tmp_path / "teacher.pt", data, "transformer", *TEACHER_ARGS)
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from tests.conftest import REPO

    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), "--user-dir", str(REPO / "pet_fairseq"), "--task", "pet_distillation", "--teacher-path", str(path),
        "-s", "en", "-t", "de", "--arch", "pet_iwslt_de_en"])
    task = tasks.setup_task(convert_namespace_to_omegaconf(args).task)
    with pytest.raises(ValueError, match="translates de->en but this task is en->de"):
        task.build_model(convert_namespace_to_omegaconf(args).model)


def test_loading_the_student_to_decode_does_not_load_the_teacher(setup):
    data, path, _, task, student, _ = setup
    task.teacher = None
    task.build_model(student.args if hasattr(student, "args") else student.cfg, from_checkpoint=True)
    assert task.teacher is None
