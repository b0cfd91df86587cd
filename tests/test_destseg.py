"DeSTSeg: shapes, release parameter counts, losses, the two training phases, resuming, a tiny run that learns."
import math

import pytest
import torch
torch.set_num_threads(1)   # pytest -n 2 on two cores: one thread per process

from cad_nb.runner import category_datasets
from cad_nb.components import Teacher
from cad_nb.data import list_categories
from cad_nb.destseg import (RELEASE_PARAMS, DeSTSeg, channel_normalize, dest_map, destseg_param_table, fit_destseg,
                            segmentation_loss, student_loss, top_k_mean)
from cad_nb.synthesis import AnomalySynthesizer, SynthesisDataset
from cad_nb.train import predict


@pytest.fixture(scope="module")
def lite0():
    return Teacher("tf_efficientnet_lite0")


def tiny_model(teacher):
    torch.manual_seed(0)
    return DeSTSeg(teacher)


def toy_dataset(n=4, size=32):
    "In-memory items with keys image, augmented, synth_mask: a bright square pasted on noise."
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        image = torch.rand(3, size, size, generator=g) * 0.3 + 0.3
        mask = torch.zeros(1, size, size)
        mask[:, 8:20, 10:22] = 1
        items.append(dict(image=image, augmented=image * (1 - mask) + mask, synth_mask=mask))
    return items


def test_shapes_follow_the_teacher(lite0):
    model = tiny_model(lite0).eval()
    out = model(torch.rand(2, 3, 64, 64))
    assert [f.shape for f in out["s"]] == [f.shape for f in out["t"]]
    assert [f.shape[1] for f in out["s"]] == [24, 40, 112]
    assert out["logits"].shape == (2, 1, 16, 16)
    maps, scores = model.predict(torch.rand(2, 3, 64, 64))
    assert maps.shape == (2, 64, 64) and scores.shape == (2,)
    assert torch.allclose(scores, top_k_mean(maps))
    assert dest_map(out).shape == (2, 64, 64)


def test_release_configuration_has_the_release_parameter_counts():
    model = DeSTSeg(Teacher("resnet18", pretrained=False), student_encoder="resnet18")
    assert model.teacher.channels == [64, 128, 256]
    assert destseg_param_table(model) == RELEASE_PARAMS
    assert RELEASE_PARAMS["Trainable"] == 32_371_393


def test_loss_values_on_hand_made_inputs():
    f = [channel_normalize(torch.randn(3, 5, 4, 4)), channel_normalize(torch.randn(3, 7, 2, 2))]
    assert student_loss(f, f).item() == pytest.approx(0.0, abs=1e-5)
    assert student_loss(f, [-v for v in f]).item() == pytest.approx(12.0, rel=1e-5)   # D = 2 x 3 samples x 2 levels
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 8:40, 8:40] = 1
    perfect = (torch.nn.functional.interpolate(mask, size=(16, 16), mode="bilinear") * 2 - 1) * 30
    assert segmentation_loss(perfect, mask)["loss"].item() == pytest.approx(0.0, abs=1e-6)
    half = segmentation_loss(torch.zeros(2, 1, 16, 16), mask)
    assert half["l1"].item() == pytest.approx(0.5)
    assert half["focal"].item() == pytest.approx(math.log(2) / 16)


def _changed(before, after, prefix):
    return [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]


def test_each_phase_trains_only_its_part(lite0):
    model, data = tiny_model(lite0), toy_dataset()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit_destseg(model, data, phase1_steps=1, phase2_steps=0, batch_size=2, progress=False)
    mid = {k: v.clone() for k, v in model.state_dict().items()}
    assert _changed(before, mid, "student.") and not _changed(before, mid, "segmentation.")
    fit_destseg(model, data, phase1_steps=0, phase2_steps=1, batch_size=2, progress=False)
    after = model.state_dict()
    assert _changed(mid, after, "segmentation.") and not _changed(mid, after, "student.")
    assert not _changed(before, after, "teacher.")


def test_resume_gives_the_weights_of_an_uninterrupted_run(lite0, tmp_path):
    def run(**kwargs):
        model = tiny_model(lite0)
        history = fit_destseg(model, toy_dataset(), phase1_steps=3, phase2_steps=3, batch_size=2, progress=False,
                              **kwargs)
        return model, history
    whole, whole_history = run()
    checkpoint = tmp_path / "destseg.pt"
    run(checkpoint=checkpoint, stop_after=2)                                       # stopped at step 4, inside phase 2
    assert torch.load(checkpoint, weights_only=False)["step"] == 4
    resumed, resumed_history = run(checkpoint=checkpoint)
    for k, v in whole.state_dict().items(): assert torch.equal(v, resumed.state_dict()[k]), k
    assert [r["loss"] for r in whole_history["step"]] == [r["loss"] for r in resumed_history["step"]]
    assert [r["phase"] for r in whole_history["step"]] == [1, 1, 1, 2, 2, 2]


def test_a_tiny_run_on_the_smoke_benchmark_learns(lite0, smoke_benchmark):
    train, test = category_datasets(smoke_benchmark, list_categories(smoke_benchmark)[0], 64, max_train=8, max_test=4)
    model = tiny_model(lite0)
    history = fit_destseg(model, SynthesisDataset(train, AnomalySynthesizer(), seed=0), phase1_steps=1,
                          phase2_steps=10, batch_size=4, progress=False)
    seg = [r["loss"] for r in history["step"] if r["phase"] == 2]
    assert sum(seg[-3:]) < sum(seg[:3])
    pred = predict(model, test, batch_size=4)
    assert pred["maps"].shape == (len(test), 64, 64) and pred["scores"].shape == (len(test),)


# ---- data-parallel training: two gloo processes on the CPU -------------------------------------------------

def _ddp_worker(rank, world, port, out_dir):
    import os
    from pathlib import Path
    from cad_nb.train import cleanup_distributed, setup_distributed
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    setup_distributed()
    torch.manual_seed(0)
    model = DeSTSeg(Teacher("tf_efficientnet_lite0"))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    fit_destseg(model, toy_dataset(n=8), phase1_steps=2, phase2_steps=2, batch_size=2, lr_scale=0.01, progress=False)
    after = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.save(dict(before=before, after=after), Path(out_dir) / f"rank{rank}.pt")
    cleanup_distributed()


def test_ddp_two_gloo_processes_train_the_same_destseg(tmp_path):
    "Each rank trains on its half of the data; DDP on the part each phase trains keeps the ranks' weights equal."
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in range(2))
    for prefix in ("student.", "segmentation."):
        names = [k for k in r0["after"] if k.startswith(prefix)]
        assert any(not torch.equal(r0["before"][k], r0["after"][k]) for k in names), prefix  # it trained
        assert [k for k in names if not torch.equal(r0["after"][k], r1["after"][k])] == [], prefix  # the ranks agree


def test_a_diverged_student_is_named(lite0):
    """A student that diverged in phase 1 (here a learning rate 1e8 times the release's: with the release's own, whether
    two steps on 8 toy images diverge depends on the CPU's float kernels) is named in phase 2, not a BCE error."""
    with pytest.raises(FloatingPointError, match="phase 1 diverged"):
        fit_destseg(tiny_model(lite0), toy_dataset(n=8), phase1_steps=2, phase2_steps=1, batch_size=2, lr_scale=1e8,
                    progress=False)
