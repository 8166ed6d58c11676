"""pet_distillation: the task that owns a frozen teacher."""

import logging

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from pet_fairseq.core.errors import ConfigError
from pet_fairseq.core.files import file_digest
from tests.conftest import REPO, make_checkpoint, toy_dictionary, write_data_dir
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
    with pytest.raises(ValueError) as err:
        distillation(data, junk, *LAYER_MAPS)
    assert str(err.value) == (f"teacher checkpoint {str(junk)!r} is not a fairseq checkpoint (torch could not unpickle "
                              "it): pass the .pt file written by fairseq-train, e.g. checkpoints/teacher/checkpoint_best.pt")
    weights = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, weights)  # a torch file, but not a fairseq checkpoint
    with pytest.raises(ValueError, match="weights.pt' is a torch file but .*pass the .pt file written by fairseq-train"):
        distillation(data, weights, *LAYER_MAPS)


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
    with pytest.raises(ValueError, match=r"translates de->en \(from its task config\) but this task is en->de"):
        task.build_model(convert_namespace_to_omegaconf(args).model)


def _teacher_without_languages(tmp_path):
    """A de->en teacher whose saved task config has no source_lang/target_lang (as plain fairseq-train
    without -s/-t writes them); its data folder has fairseq-preprocess's split file names."""
    data = write_data_dir(tmp_path / "data", toy_dictionary(60))
    for lang in ("de", "en"):
        for ext in ("bin", "idx"):
            (data / f"train.de-en.{lang}.{ext}").write_bytes(b"")
    path, _, _ = make_checkpoint(tmp_path / "teacher.pt", data, "transformer", *TEACHER_ARGS)
    state = torch.load(path, map_location="cpu")
    state["cfg"]["task"].update(source_lang=None, target_lang=None)
    torch.save(state, path)
    return data, path


def test_teacher_without_languages_gets_its_direction_from_its_data_folder(tmp_path):
    data, path = _teacher_without_languages(tmp_path)
    with pytest.raises(ValueError) as err:
        distillation(data, path, *LAYER_MAPS, "-s", "en", "-t", "de")  # the last -s/-t win
    message = str(err.value)
    assert "translates de->en" in message and "this task is en->de" in message
    assert f"inferred from the split files of its data folder {data}" in message
    assert "--source-lang de --target-lang en" in message
    task, _, _ = distillation(data, path, *LAYER_MAPS)  # de->en: accepted
    assert task.teacher is not None


def test_teacher_whose_direction_cannot_be_told_is_loaded_with_a_warning(tmp_path, caplog):
    data, path = _teacher_without_languages(tmp_path)
    state = torch.load(path, map_location="cpu")
    state["cfg"]["task"]["data"] = str(tmp_path / "moved")
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="pet_fairseq.tasks.distillation"):
        task, _, _ = distillation(data, path, *LAYER_MAPS)
    assert task.teacher is not None
    assert "cannot check the translation direction of teacher" in caplog.text and "moved does not exist" in caplog.text


def test_the_inferred_language_pair_is_stored_in_the_config_fairseq_saves(tmp_path):
    data, path = _teacher_without_languages(tmp_path)
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), "--user-dir", str(REPO / "pet_fairseq"), "--task", "pet_distillation", "--teacher-path", str(path),
        "--arch", "pet_iwslt_de_en"])  # no -s/-t
    cfg = convert_namespace_to_omegaconf(args)
    assert cfg.task.source_lang is None
    tasks.setup_task(cfg.task)
    # fairseq-train's checkpoints hold OmegaConf.to_container(cfg): the inferred pair is in it now
    assert (cfg.task.source_lang, cfg.task.target_lang) == ("de", "en")


def test_loading_the_student_to_decode_does_not_load_the_teacher(setup):
    data, path, _, task, student, _ = setup
    task.teacher = None
    task.build_model(student.args if hasattr(student, "args") else student.cfg, from_checkpoint=True)
    assert task.teacher is None


def test_batch_iterators_are_built_after_unreachable_cycles_are_collected(setup):
    """Garbage cycles (e.g. a finished epoch's DataLoader iterator) are freed before workers can fork."""
    import gc

    from fairseq.data import LanguagePairDataset

    task = setup[3]
    d = task.target_dictionary
    items = [torch.tensor([5 + i, d.eos()]) for i in range(4)]
    dataset = LanguagePairDataset(items, [2] * 4, d, items, [2] * 4, d)
    freed = []

    class Node:
        def __del__(self):
            freed.append(self)

    gc.disable()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: refcounts alone never free it
        del a, b
        assert not freed
        itr = task.get_batch_iterator(dataset, max_sentences=2)
    finally:
        gc.enable()
    assert len(freed) == 2
    assert sum(len(batch["id"]) for batch in itr.next_epoch_itr(shuffle=False)) == 4


def test_a_student_resumed_with_another_teacher_is_refused_unless_allowed(tmp_path, caplog):
    data, first, _ = teacher_checkpoint(tmp_path)
    other, _, _ = make_checkpoint(tmp_path / "other.pt", data, "transformer", *TEACHER_ARGS, seed=12)
    save = tmp_path / "student"
    task, student, _ = distillation(data, first, *LAYER_MAPS, "--save-dir", str(save))
    assert task.state_dict()["teacher_sha256"] == file_digest(first)
    # a checkpoint as fairseq-train writes it: the trainer saves the task's state as task_state
    save.mkdir()
    torch.save({"model": student.state_dict(), "task_state": task.state_dict()}, save / "checkpoint_last.pt")

    with pytest.raises(ConfigError) as err:
        distillation(data, other, *LAYER_MAPS, "--save-dir", str(save))
    message = str(err.value)
    assert "\n" not in message and f"{save / 'checkpoint_last.pt'} was distilled from teacher {first}" in message
    assert f"not from --teacher-path {other} (sha256 {file_digest(other)[:12]})" in message
    assert "another --save-dir" in message and "--allow-teacher-change" in message

    same, _, _ = distillation(data, first, *LAYER_MAPS, "--save-dir", str(save))  # the same teacher resumes
    assert same.state_dict()["teacher_sha256"] == file_digest(first)
    with caplog.at_level(logging.WARNING):
        allowed, _, _ = distillation(data, other, *LAYER_MAPS, "--save-dir", str(save), "--allow-teacher-change")
    assert allowed.state_dict()["teacher_sha256"] == file_digest(other) and "--allow-teacher-change" in caplog.text
    # a checkpoint without the record (written before it was kept) resumes as before, and records the teacher now
    torch.save({"model": student.state_dict(), "task_state": {}}, save / "checkpoint_last.pt")
    older, _, _ = distillation(data, other, *LAYER_MAPS, "--save-dir", str(save))
    assert older.state_dict()["teacher_path"] == str(other)
