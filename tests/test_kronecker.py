"""Kronecker-factored layers: exactness, nearest-Kronecker initialisation, PET integration."""

import pytest
import torch
import torch.nn.functional as F

from pet_fairseq.modules.kronecker import (
    KroneckerEmbedding,
    KroneckerLinear,
    TiedKroneckerOutputProjection,
    rearrange_for_kronecker,
)
from tests.conftest import build, make_checkpoint, toy_dictionary, toy_task, write_data_dir
from tests.test_pet_transformer import TINY, beam_vs_full_forward, peaky


@pytest.mark.parametrize("in_f, out_f, a_shape", [(12, 8, (2, 3)), (16, 16, (4, 4)), (6, 10, (5, 1)), (8, 8, (1, 1)), (8, 8, (8, 8))])
def test_kronecker_linear_equals_dense_kron_forward_and_backward(in_f, out_f, a_shape):
    torch.manual_seed(0)
    layer = KroneckerLinear(in_f, out_f, a_shape).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 5, in_f, dtype=torch.double, requires_grad=True)
    a, b = layer.a.detach().clone().requires_grad_(), layer.b.detach().clone().requires_grad_()
    ref = F.linear(x, torch.kron(a, b), layer.bias)
    y = layer(x)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, layer.a, layer.b], g)
    ref_grads = torch.autograd.grad(ref, [x, a, b], g)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("a_shape, message", [((3, 4), "does not divide a 8x12 weight"), ((0, 2), "does not divide")])
def test_bad_factor_shapes_are_clear_errors(a_shape, message):
    with pytest.raises(ValueError, match=message):
        KroneckerLinear(12, 8, a_shape)


def test_from_dense_recovers_an_exact_kronecker_product():
    torch.manual_seed(1)
    a, b = torch.randn(3, 2), torch.randn(4, 5)
    weight = torch.kron(a, b)
    layer = KroneckerLinear.from_dense(weight, (3, 2))
    torch.testing.assert_close(layer.dense_weight(), weight, atol=1e-5, rtol=1e-5)
    # the factors themselves are only defined up to a scale c: A·c ⊗ B/c
    ratio = layer.a / a
    torch.testing.assert_close(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-4, rtol=1e-4)


def test_from_dense_is_the_best_rank_one_approximation():
    torch.manual_seed(2)
    weight = torch.randn(12, 20, dtype=torch.double)
    layer = KroneckerLinear.from_dense(weight, (3, 4))
    sv = torch.linalg.svdvals(rearrange_for_kronecker(weight, (3, 4)))
    error = (weight - layer.dense_weight().double()).norm() ** 2
    assert error.item() == pytest.approx((sv[1:] ** 2).sum().item(), rel=1e-4)
    assert error < weight.norm() ** 2  # and strictly better than zero
    other = KroneckerLinear(20, 12, (3, 4)).double()  # any other product is no better
    assert (weight - other.dense_weight()).norm() ** 2 >= error


def test_kronecker_embedding_and_tied_projection_match_the_dense_matrix():
    torch.manual_seed(3)
    emb = KroneckerEmbedding(16, 12, padding_idx=1, a_shape=(4, 3))
    tokens = torch.tensor([[0, 1, 5, 15], [7, 1, 1, 2]])
    dense = emb.dense_weight()
    torch.testing.assert_close(emb(tokens), dense[tokens])
    assert emb(tokens)[0, 1].abs().sum() == 0  # padding row is zero
    x = torch.randn(2, 3, 12)
    torch.testing.assert_close(TiedKroneckerOutputProjection(emb)(x), x @ torch.kron(emb.a, emb.b).t(), atol=1e-5, rtol=1e-5)


def test_kronecker_student_parameters_equal_the_analytic_count():
    d = toy_dictionary(1000)
    V = len(d)
    model = build("pet_kronecker_iwslt_de_en", task=toy_task(d))
    kron = lambda o, i, ao, ai: ao * ai + (o // ao) * (i // ai) + o  # noqa: E731  A + B + bias
    enc_layer = 4 * kron(320, 320, 2, 2) + kron(640, 320, 4, 4) + kron(320, 640, 4, 4) + 4 * 320
    dec_layer = (4 * kron(240, 240, 2, 2) + 2 * kron(240, 320, 2, 2) + kron(240, 240, 2, 2)  # cross q shared
                 + kron(480, 240, 4, 4) + kron(240, 480, 4, 4) + 6 * 240)
    embeddings = (2 * 2 + (V // 2) * 160) + (2 * 2 + (V // 2) * 120)
    assert sum(p.numel() for p in model.parameters()) == 2 * enc_layer + 2 * dec_layer + embeddings


def test_incremental_decoding_equals_full_forward_for_a_kronecker_pet_student():
    model = peaky(build("pet_kronecker_iwslt_de_en", **TINY), scale=2.0)
    with torch.no_grad():
        worst, _ = beam_vs_full_forward(model)
    assert worst < 1e-4


def test_init_from_teacher_with_1x1_factors_reproduces_the_teacher(tmp_path):
    """A ⊗ B with A 1x1 can hold any matrix, so the initialised student computes the teacher's function."""
    from pet_fairseq.kronecker_init import main

    data = write_data_dir(tmp_path / "data", toy_dictionary(60))
    teacher_path, teacher, _ = make_checkpoint(
        tmp_path / "teacher.pt", data, "transformer", "--encoder-layers", "2", "--decoder-layers", "2",
        "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2")
    out = tmp_path / "student.pt"
    assert main([str(teacher_path), str(out), "--kronecker-ffn", "1,1", "--kronecker-attention", "1,1",
                 "--kronecker-embeddings", "1,1"]) == 0
    from fairseq import checkpoint_utils

    [student], _ = checkpoint_utils.load_model_ensemble([str(out)])
    src = torch.randint(4, 60, (3, 6))
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(src, torch.full((3,), 6), src)[0], teacher(src, torch.full((3,), 6), src)[0],
                                   atol=1e-4, rtol=1e-4)
    # a real factoring is smaller and starts from the nearest Kronecker products
    small = tmp_path / "small.pt"
    assert main([str(teacher_path), str(small), "--kronecker-ffn", "4,4", "--encoder-layer-plan", "0,0~",
                 "--decoder-layer-plan", "0,0~", "--encoder-source-layers", "2", "--decoder-source-layers", "2"]) == 0
    [compact], _ = checkpoint_utils.load_model_ensemble([str(small)])
    assert sum(p.numel() for p in compact.parameters()) < sum(p.numel() for p in teacher.parameters())
    w = teacher.encoder.layers[1].fc1.weight
    approx = compact.encoder.unique_layers[0].fc1.dense_weight()
    best = KroneckerLinear.from_dense(w, (4, 4)).dense_weight()
    torch.testing.assert_close(approx, best)


def test_init_rejects_bad_source_layers(tmp_path):
    from pet_fairseq.kronecker_init import source_layers

    assert source_layers("", 2, 6, "x") == [2, 5]
    with pytest.raises(ValueError, match="give 2 teacher layers in 1..6"):
        source_layers("1,7", 2, 6, "--encoder-source-layers")


def test_init_never_overwrites_the_teacher_and_needs_force_for_an_existing_student(tmp_path, capsys):
    """STUDENT.pt never replaces the teacher or (without --force) an existing file; a missing folder is named."""
    from pet_fairseq.kronecker_init import main

    data = write_data_dir(tmp_path / "data", toy_dictionary(60))
    teacher, _, _ = make_checkpoint(
        tmp_path / "teacher.pt", data, "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
        "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
        "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2")
    existing = tmp_path / "student.pt"
    existing.write_bytes(b"an earlier student")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}

    def refused(out, *extra) -> str:
        with pytest.raises(SystemExit) as exit_:
            main([str(teacher), str(out), "--kronecker-ffn", "4,4", *extra])
        assert exit_.value.code == 2
        return capsys.readouterr().err.splitlines()[-1]

    assert refused(teacher, "--force") == (f"pet-kronecker-init: error: STUDENT.pt {teacher} is the teacher checkpoint "
                                          f"{teacher}: the student never replaces its teacher; choose another STUDENT.pt")
    assert refused(existing) == (f"pet-kronecker-init: error: STUDENT.pt {existing} exists; pass --force to overwrite "
                                 "it, or choose another file")
    assert refused(tmp_path / "nodir" / "s.pt") == (f"pet-kronecker-init: error: STUDENT.pt {tmp_path / 'nodir' / 's.pt'}"
                                                    f": its folder {tmp_path / 'nodir'} does not exist; create it first")
    assert refused(tmp_path / "data") == (f"pet-kronecker-init: error: STUDENT.pt {tmp_path / 'data'} is a folder; "
                                          "pass a file name for the student checkpoint")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert main([str(teacher), str(existing), "--kronecker-ffn", "4,4", "--force"]) == 0
    assert existing.read_bytes() != b"an earlier student" and teacher.read_bytes() == before["teacher.pt"]
