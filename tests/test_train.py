"Training loop: exact resume from a checkpoint (CFRG at smoke size) and data-parallel training with gloo."
import os, socket, tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
torch.set_num_threads(1)   # pytest -n 2 on two cores: one thread per process
import torch.multiprocessing as mp
from torch import nn

from cad_nb.cfrg import CFRG, CFRGLoss, cfrg_step
from cad_nb.metrics import evaluate
from cad_nb.train import (autocast, cleanup_distributed, fit, is_main_process, load_checkpoint, make_scaler, predict,
                          save_checkpoint, setup_distributed, unwrap, wrap_ddp)


def _synthetic_pairs(n=6, size=32, seed=0):
    "Normal images with a pasted noise square as the 'anomalous' version, its mask, and test labels."
    g = torch.Generator().manual_seed(seed); items = []
    for i in range(n):
        img = torch.rand(3, size, size, generator=g) * 0.2 + 0.4
        mask = torch.zeros(1, size, size); y, x = (int(v) for v in torch.randint(0, size - 8, (2,), generator=g))
        mask[:, y:y + 8, x:x + 8] = 1
        aug = img * (1 - mask) + torch.rand(3, size, size, generator=g) * mask
        label = i % 2
        items.append(dict(image=aug if label else img, augmented=aug, synth_mask=mask, mask=mask * label, label=label, path=f"im{i}"))
    return items


def _train(run_dir, epochs, stop_after=None):
    torch.manual_seed(0)
    model = CFRG("resnet18", "efficientnet_b0", pretrained=False, head_width=16, bottleneck_blocks=1, decoder_blocks=1)
    hist = fit(model, partial(cfrg_step, criterion=CFRGLoss()), _synthetic_pairs(), epochs=epochs, batch_size=4,
               checkpoint=Path(run_dir) / "cfrg.pt", progress=False, stop_after=stop_after, seed=3)
    return model, hist


def test_resume_gives_identical_weights_and_metrics():
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        straight, h_straight = _train(a, epochs=2)
        half, h_first = _train(b, epochs=2, stop_after=1)                    # "interrupted" after epoch 1
        assert not all(torch.equal(v, half.state_dict()[k]) for k, v in straight.state_dict().items())  # epoch 2 matters
        assert len(h_first["epoch"]) == 1 and load_checkpoint(Path(b) / "cfrg.pt")["epoch"] == 0
        torch.manual_seed(123)                                                # a fresh process would differ here
        resumed, h_resumed = _train(b, epochs=2)
    sd1, sd2 = straight.state_dict(), resumed.state_dict()
    assert sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1), [k for k in sd1 if not torch.equal(sd1[k], sd2[k])][:5]
    assert h_straight == h_resumed
    data = _synthetic_pairs(seed=1)
    p1, p2 = predict(straight, data, batch_size=3), predict(resumed, data, batch_size=3)
    np.testing.assert_array_equal(p1["maps"], p2["maps"])
    assert evaluate(p1["masks"], p1["maps"], p1["scores"]) == evaluate(p2["masks"], p2["maps"], p2["scores"])


def test_checkpoint_restores_rng_and_is_atomic(tmp_path):
    save_checkpoint(tmp_path / "c.pt", epoch=1)
    expected = torch.rand(3)
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["epoch"] == 1 and torch.equal(torch.rand(3), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_amp_helpers_are_noops_on_cpu():
    with autocast("cpu"): y = nn.Linear(2, 2)(torch.ones(1, 2))
    assert y.dtype == torch.float32 and not make_scaler("cpu").is_enabled()


# ---- data-parallel training: two gloo processes on the CPU -------------------------------------------------

class _Tiny(nn.Module):
    def __init__(self): super().__init__(); self.lin = nn.Linear(4, 1)
    def forward(self, x): return self.lin(x)


def _tiny_step(model, batch, device):
    return dict(loss=((model(batch["image"].to(device)) - batch["target"].to(device)) ** 2).mean())


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    r, w, _ = setup_distributed()
    assert (r, w) == (rank, world) and is_main_process() == (rank == 0)
    # 1. one DDP backward: each rank's gradient must be the mean of the ranks' own gradients
    torch.manual_seed(0); model = _Tiny()                                         # same init on both ranks
    x = torch.full((2, 4), float(rank + 1)); t = torch.full((2, 1), float(rank))
    local = _Tiny(); local.load_state_dict(model.state_dict())
    _tiny_step(local, dict(image=x, target=t), "cpu")["loss"].backward()
    ddp = wrap_ddp(model, torch.device("cpu")); assert ddp is not model
    _tiny_step(ddp, dict(image=x, target=t), "cpu")["loss"].backward()
    # 2. the training loop under DDP (DistributedSampler splits the data)
    torch.manual_seed(rank)                                                        # different init per rank: DDP broadcasts rank 0's
    trained = _Tiny()
    data = [dict(image=torch.full((4,), i / 10), target=torch.tensor([i / 5])) for i in range(16)]
    fit(trained, _tiny_step, data, epochs=2, batch_size=2, lr=0.01, progress=False, checkpoint=Path(out_dir) / "tiny.pt")
    torch.save(dict(local_grad=local.lin.weight.grad, ddp_grad=model.lin.weight.grad,
                    params=unwrap(trained).state_dict()), Path(out_dir) / f"rank{rank}.pt")
    cleanup_distributed()


def test_ddp_two_gloo_processes_average_gradients_and_agree(tmp_path):
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in range(2))
    mean_grad = (r0["local_grad"] + r1["local_grad"]) / 2
    assert not torch.allclose(r0["local_grad"], r1["local_grad"])                 # the ranks saw different data
    torch.testing.assert_close(r0["ddp_grad"], mean_grad); torch.testing.assert_close(r1["ddp_grad"], mean_grad)
    for k in r0["params"]: assert torch.equal(r0["params"][k], r1["params"][k])
    assert (tmp_path / "tiny.pt").is_file()                                       # written by rank 0


_RESUME_SCRIPT = """
import sys, warnings, torch
from torch import nn
from cad_nb.train import fit
torch.manual_seed(0); model = nn.Conv2d(3, 1, 1)
data = [dict(image=torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(i))) for i in range(8)]
step = lambda m, b, d: dict(loss=m(b["image"]).pow(2).mean())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    h = fit(model, step, data, epochs=2, batch_size=4, lr=0.1, checkpoint=sys.argv[1], progress=False,
            stop_after=int(sys.argv[2]) or None)
print(len(h["epoch"]), sum("another configuration" in str(w.message) for w in caught), float(model.bias))
"""


def test_a_checkpoint_resumes_in_another_process(tmp_path):
    "The run signature may not depend on the process (Python salts hash()): a new process must resume, not retrain."
    import subprocess, sys
    run = lambda ckpt, stop, seed: subprocess.run([sys.executable, "-c", _RESUME_SCRIPT, str(ckpt), str(stop)], capture_output=True,
                                                  text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout.split()
    assert run(tmp_path / "a.pt", 1, "1")[:2] == ["1", "0"]                  # interrupted after its first epoch
    resumed = run(tmp_path / "a.pt", 0, "2")                                   # another process, another hash seed
    straight = run(tmp_path / "b.pt", 0, "3")
    assert resumed[:2] == ["2", "0"] and resumed == straight
