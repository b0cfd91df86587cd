"The multi-task model, losses, decoding, metrics and a short training run with resume."
import math
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
from cad_nb.coba import TaskScheduler
from cad_nb.data import read_coco, CocoMultiTaskDataset
from cad_nb.benchmark import make_car_benchmark
from cad_nb.mtl import (Backbone, MultiTaskModel, TASKS, TASK_LOSSES, centernet_targets, decode_detections, detection_map,
                        segmentation_metrics, classification_metrics, task_datasets, few_shot_classes, RareClassAugmentation,
                        train_multitask, predict, evaluate, lr_at)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_car_benchmark(tmp_path_factory.mktemp("car"), "smoke", seed=0)
    return read_coco(root / "annotations/train.json"), read_coco(root / "annotations/val.json")


def test_backbones_strides():
    for name, kw, ch in [("convnext_atto", {}, [80, 160, 320]), ("vit_small_patch16_dinov3", dict(depth=1), [192, 384, 384])]:
        b = Backbone(name, pretrained=False, image_size=64, **kw)
        feats = b(torch.rand(1, 3, 64, 64))
        assert [f.shape[-1] for f in feats] == [8, 4, 2] and [f.shape[1] for f in feats] == ch == b.channels
        assert "randomly initialised" in b.weights


def test_pretrained_offline_is_reported():
    import time
    from cad_nb.weights import hub_reachable as _hub_reachable
    t0 = time.time(); b = Backbone("convnext_atto", pretrained=True, image_size=64)
    if not _hub_reachable(): assert b.weights.startswith("randomly initialised (pretrained weights unavailable: timm hub/cache: no network") and time.time() - t0 < 10
    else: assert b.weights.startswith(("pretrained", "randomly initialised (pretrained weights unavailable"))


def test_centernet_roundtrip():
    boxes, classes = torch.tensor([[8., 12., 40., 28.]]), torch.tensor([2])
    heat, cell, logwh, off = centernet_targets(boxes, classes, 3, (16, 16))
    det = dict(heatmap=torch.where(heat[None] == 1, 6.0, -9.0), size=torch.zeros(1, 2, 16, 16), offset=torch.zeros(1, 2, 16, 16))
    cy, cx = cell[0, 1], cell[0, 0]
    det["size"][0, :, cy, cx] = logwh[0]; det["offset"][0, :, cy, cx] = off[0]
    b, s, c = decode_detections(det)[0]
    torch.testing.assert_close(b, boxes); assert c.tolist() == [2]


def test_nms_removes_duplicates():
    det = dict(heatmap=torch.full((1, 1, 16, 16), -9.0), size=torch.full((1, 2, 16, 16), math.log(8)), offset=torch.zeros(1, 2, 16, 16))
    det["heatmap"][0, 0, 5, 5] = 3.0; det["heatmap"][0, 0, 5, 7] = 2.0          # two peaks, boxes overlapping IoU 0.6
    assert len(decode_detections(det, iou_threshold=0.5)[0][0]) == 1
    assert len(decode_detections(det, iou_threshold=0.7)[0][0]) == 2


def test_metrics():
    assert classification_metrics([1, 1], [1, 0])["accuracy"] == 0.5
    gt = [torch.tensor([[0., 0., 10., 10.]])]; gc = [torch.tensor([1])]
    assert detection_map(gt, gc, [(gt[0], torch.tensor([0.8]), torch.tensor([1]))], 1)["map"] == pytest.approx(1.0)
    assert detection_map(gt, gc, [(gt[0], torch.tensor([0.8]), torch.tensor([2]))], 2)["map50"] == 0.0   # wrong class
    m = segmentation_metrics([np.array([[1, 1], [0, 0]])], [np.array([[1, 0], [0, 0]])], 1)
    assert m["miou"] == pytest.approx(0.5) and m["mdice"] == pytest.approx(2 / 3)


def test_losses_finite_and_gradients_reach_backbone(data):
    train, _ = data
    model = MultiTaskModel("convnext_atto", 7, pretrained=False, image_size=64, dim=32)
    ds = CocoMultiTaskDataset([s for s in train.samples if s.classes][:2], 64)
    from cad_nb.data import collate_multitask
    b = collate_multitask([ds[0], ds[1]]); out = model(b["image"])
    for t in TASKS:
        model.zero_grad(); loss = TASK_LOSSES[t](out[t], b) if t == "cls" else TASK_LOSSES[t](model(b["image"], tasks=(t,))[t], b)
        loss.backward(); assert torch.isfinite(loss), t
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters()), t


def test_vit_multitask_forward():
    m = MultiTaskModel("vit_small_patch16_dinov3", 7, pretrained=False, image_size=64, dim=32, depth=1)
    o = m(torch.rand(2, 3, 64, 64))
    assert o["cls"].shape == (2, 8) and o["det"]["heatmap"].shape == (2, 7, 16, 16) and o["seg"].shape == (2, 8, 64, 64)


def test_lr_schedule():
    assert lr_at(0, 100, 1.0) == pytest.approx(0.2) and lr_at(99, 100, 1.0) < 0.1 and lr_at(5, 100, 1.0) == pytest.approx(1.0)


def test_train_resume_and_evaluate(data, tmp_path):
    train, val = data
    aug = RareClassAugmentation(train, few_shot_classes(train), n=4, image_size=64)
    sets, vsets = task_datasets(train, 64, aug), task_datasets(val, 64)
    torch.manual_seed(0)
    m = MultiTaskModel("convnext_atto", 7, pretrained=False, image_size=64, dim=32)
    kw = dict(weighting="coba", scheduler=TaskScheduler(3, "adaptive"), batch_size=2, coba_kwargs=dict(warmup_steps=2, history_length=5),
              checkpoint=tmp_path / "c.pt", checkpoint_every=1, progress=False)
    r = train_multitask(m, sets, vsets, steps=2, **kw)
    r2 = train_multitask(m, sets, vsets, steps=3, **kw)
    assert [h["step"] for h in r2["history"]] == [1, 2, 3] and r2["weighting"].t == 3
    assert abs(sum(r2["history"][-1][f"w_{t}"] for t in TASKS) - 1) < 1e-6
    with pytest.warns(UserWarning, match="another configuration"):                 # other settings: starts afresh
        r3 = train_multitask(m, sets, vsets, steps=1, **{**kw, "batch_size": 3})
    assert [h["step"] for h in r3["history"]] == [1]
    for w in ("uw", "dwa", "static"):
        h = train_multitask(m, sets, vsets, weighting=w, steps=2, batch_size=2, update_interval=1, progress=False)["history"]
        assert all(np.isfinite(x["total"]) for x in h)
    single = train_multitask(m, sets, vsets, weighting="static", tasks=("seg",), steps=1, batch_size=2, progress=False)["history"]
    assert single[0]["tasks"] == ["seg"]
    res = evaluate(predict(m, CocoMultiTaskDataset(val.samples[:6], 64)), 7)
    assert 0 <= res["accuracy"] <= 1 and 0 <= res["macro_f1"] <= 1


DDP_SCRIPT = '''
import sys, torch
from pathlib import Path
torch.set_num_threads(1)
from cad_nb.data import read_coco
from cad_nb.benchmark import make_car_benchmark
from cad_nb.mtl import MultiTaskModel, task_datasets, train_multitask
from cad_nb.coba import TaskScheduler
from cad_nb.train import cleanup_distributed
root = make_car_benchmark(Path(sys.argv[1]), "smoke", 0)
tr, va = read_coco(root / "annotations/train.json"), read_coco(root / "annotations/val.json")
torch.manual_seed(0)
m = MultiTaskModel("convnext_atto", 7, pretrained=False, image_size=32, dim=16)
r = train_multitask(m, task_datasets(tr, 32), task_datasets(va, 32), "coba", TaskScheduler(3, "adaptive"), steps=2, batch_size=2,
                    coba_kwargs=dict(warmup_steps=1), progress=False)
p = sum(float(q.detach().double().sum()) for q in m.parameters())
sys.stdout.write(f"RESULT {torch.distributed.get_rank()} {[h['tasks'] for h in r['history']]} {round(p, 6)}\\n")  # one write: ranks print at once
cleanup_distributed()
'''


def test_torchrun_ddp_two_processes(data, tmp_path):
    "Two CPU processes (gloo): same tasks per step on both ranks and identical weights after training."
    import subprocess, sys, shutil
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    r = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(tmp_path / "ddp.py"), str(tmp_path)], capture_output=True, text=True, timeout=300)
    lines = sorted(l for l in r.stdout.splitlines() if l.startswith("RESULT"))
    assert r.returncode == 0 and len(lines) == 2, r.stderr[-2000:]
    assert lines[0].split(" ", 2)[2] == lines[1].split(" ", 2)[2]


def test_segmentation_head_can_overfit_a_few_images(data):
    "The seg decoder must be able to memorise 6 training images (a plain CE loss learned 'all background')."
    train, _ = data
    train.samples[:] = [s for s in train.samples if s.classes][:6]
    torch.manual_seed(0)
    model = MultiTaskModel("convnext_atto", len(train.class_names) - 1, pretrained=False, image_size=64)
    train_multitask(model, task_datasets(train, 64), None, weighting="static", tasks=("seg",), steps=120, batch_size=6,
                    lr=2e-3, progress=False)
    result = evaluate(predict(model, CocoMultiTaskDataset(train.samples, 64)), len(train.class_names) - 1)
    assert result["miou"] > 0.2, result
