"CFRG model, losses, maps and the baselines built from its parts."
import warnings

import numpy as np
import pytest
import torch
torch.set_num_threads(1)   # pytest -n 2 on two cores: one thread per process

from cad_nb import cfrg
from cad_nb.baselines import PaDiM, ReverseDistillation, rd_step
from cad_nb.cfrg import CFRG, CFRGLoss, cfrg_anomaly_map, push_pull_loss
from cad_nb.components import MapStyle, Teacher, gaussian_blur


@pytest.fixture(scope="module")
def teacher():
    return Teacher("resnet18", pretrained=False)


def test_wide_resnet_teacher_shapes_follow_feature_info():
    model = CFRG("wide_resnet50_2", "efficientnet_b0", pretrained=False, head_width=8, bottleneck_blocks=1, decoder_blocks=1)
    assert model.teacher.channels == [256, 512, 1024]
    out = model(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in out["r"]] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4)]
    assert [f.shape for f in out["s"]] == [f.shape for f in out["t_a"]]
    assert model.bottleneck.out_channels == 2048


def test_teacher_frozen_and_random_init_is_reported(teacher):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = Teacher("resnet18", pretrained=True)
    if t.is_random:                                   # offline: the fallback must be loud
        assert any("RANDOMLY INITIALISED" in str(x.message) for x in w)
    model = CFRG(teacher, "efficientnet_b0", head_width=8).train()
    assert not model.teacher.training and model.student.training
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert cfrg.RANDOM_TEACHER_NOTE.startswith("NOTE")


def test_ablation_switches_change_what_is_built_and_computed(teacher):
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(0); full = CFRG(teacher, "efficientnet_b0", head_width=8)
    torch.manual_seed(0); wc = CFRG(teacher, "efficientnet_b0", head_width=8, recovery_weight=False)
    wc.load_state_dict(full.state_dict())
    full.eval(); wc.eval()
    assert not torch.allclose(full(x)["logits"], wc(x)["logits"])          # WC drops w_r from the head input
    assert not hasattr(CFRG(teacher, "efficientnet_b0", recovery=False), "decoder")
    assert not hasattr(CFRG(teacher, "efficientnet_b0", segmentation=False), "head")
    mask = torch.zeros(2, 1, 64, 64); mask[:, :, 10:30, 10:30] = 1
    out = full(x, x)
    l_push, l_pull = CFRGLoss()(out, mask), CFRGLoss(push=False)(out, mask)
    assert l_push["dis"] > l_pull["dis"] and torch.isclose(l_push["rec"], l_pull["rec"])
    no_rec = CFRG(teacher, "efficientnet_b0", recovery=False, head_width=8)
    assert CFRGLoss()(no_rec(x, x), mask)["rec"].item() == 0.0


def test_push_pull_on_known_cosines():
    t = torch.tensor([[1.0, 0.0]]).view(1, 2, 1, 1); s = torch.tensor([[0.0, 1.0]]).view(1, 2, 1, 1)  # cos = 0
    normal, defect = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    assert push_pull_loss([t], [s], normal).item() == pytest.approx(1.0)   # pulled: 1 - cos
    assert push_pull_loss([t], [s], defect).item() == pytest.approx(0.0)   # pushed apart already: cos
    assert push_pull_loss([t], [t], defect).item() == pytest.approx(1.0)


def test_map_is_batched_blurred_and_scored_by_max(teacher):
    model = CFRG(teacher, "efficientnet_b0", head_width=8).eval()
    x = torch.rand(3, 3, 64, 64)
    maps, scores = model.predict(x)
    single = torch.cat([model.predict(x[i:i + 1])[0] for i in range(3)])
    torch.testing.assert_close(maps, single, atol=1e-4, rtol=1e-4)
    assert torch.equal(scores, maps.flatten(1).amax(1))
    raw = cfrg_anomaly_map(model(x), MapStyle(sigma=0))[0]
    assert raw.std() > maps.std()                                            # smoothing reduces variation
    assert gaussian_blur(torch.ones(1, 1, 9, 9)).allclose(torch.ones(1, 1, 9, 9))


def test_bad_input_size_is_a_clear_error(teacher):
    with pytest.raises(ValueError, match="multiple of 32"):
        CFRG(teacher, "efficientnet_b0")(torch.rand(1, 3, 50, 64))


def test_baselines_share_cfrg_parts(teacher):
    torch.manual_seed(0)                                                     # unseeded, the PaDiM check failed now and then
    rd = ReverseDistillation(teacher)
    assert isinstance(rd.bottleneck, cfrg.OneClassBottleneck) and isinstance(rd.decoder, cfrg.RecoveryDecoder)
    x = torch.rand(2, 3, 64, 64)
    loss = rd_step(rd, dict(image=x), "cpu")["loss"]
    assert 0 < loss.item() <= 2 * 3
    padim = PaDiM(teacher, n_features=20).eval()
    padim.fit_gaussians([torch.rand(4, 3, 64, 64)])
    normal = padim.predict(padim_imgs := torch.rand(2, 3, 64, 64))[1]
    weird = padim.predict(torch.ones(2, 3, 64, 64))[1]
    assert (weird > normal.max()).all()                                      # far from the fitted Gaussians
