"""Training step time of the multi-task model per task mix, on the CPU (or CUDA with --device cuda).

    .venv/bin/python tests/benchmarks/bench_mtl_step.py                 # smoke profile sizes
    .venv/bin/python tests/benchmarks/bench_mtl_step.py --profile cpu   # cpu profile sizes (used to estimate its run time)

One step = one batch per task in the mix, all through the backbone in one pass and each through its task's decoder, the static-weight loss,
one backward and one AdamW step; the median over `--repeats` steps after 2 warm-up steps is printed.
"""
import argparse, itertools, time
from pathlib import Path

import numpy as np
import torch

from cad_nb.core import get_device, device_name
from cad_nb.settings import load_profile
from cad_nb.data import read_coco, collate_multitask
from cad_nb.benchmark import make_car_benchmark
from cad_nb.mtl import MultiTaskModel, TASKS, TASK_LOSSES, task_datasets
from cad_nb.coba import EqualWeights
from cad_nb.train import autocast, make_scaler


def backbone_kwargs(cfg, name):
    return dict(depth=cfg.mtl.vit_depth) if name.startswith("vit") and cfg.mtl.vit_depth else {}


def bench(cfg, name, mixes, repeats, device):
    train = read_coco(make_car_benchmark(cfg.path("runtime.cache_dir"), cfg.mtl.benchmark, cfg.runtime.seed) / "annotations/train.json")
    sets = task_datasets(train, cfg.mtl.image_size)
    batches = {t: collate_multitask([sets[t][i] for i in range(cfg.mtl.batch_size)]) for t in TASKS}
    torch.manual_seed(0)
    model = MultiTaskModel(name, len(train.class_names) - 1, pretrained=False, image_size=cfg.mtl.image_size, **backbone_kwargs(cfg, name)).to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-4); scaler = make_scaler(device); w = EqualWeights(len(TASKS))
    rows = []
    for mix in mixes:
        times = []
        for r in range(repeats + 2):
            if device.type == "cuda": torch.cuda.synchronize()
            t0 = time.perf_counter()
            with autocast(device):
                out = model({t: batches[t]["image"].to(device) for t in mix})       # as in training: one backbone pass
                losses = {TASKS.index(t): TASK_LOSSES[t](out[t], batches[t]) for t in mix}
                loss = w.loss(losses)
            opt.zero_grad(); scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
            if device.type == "cuda": torch.cuda.synchronize()
            if r >= 2: times.append(time.perf_counter() - t0)
        rows.append((name, "+".join(mix), 1000 * float(np.median(times)), 1000 * float(np.min(times))))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke"); ap.add_argument("--repeats", type=int, default=5); ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads; default: the profile's mtl_threads (0: torch's default)")
    ap.add_argument("--backbones", default=None, help="comma list; default: the profile's mtl_backbones")
    a = ap.parse_args()
    cfg = load_profile(a.profile); device = get_device(a.device); threads = a.threads if a.threads is not None else cfg.mtl.threads
    if threads: torch.set_num_threads(threads)
    names = a.backbones.split(",") if a.backbones else list(cfg.mtl.backbones)
    mixes = [c for k in (1, 2, 3) for c in itertools.combinations(TASKS, k)]
    print(f"profile={a.profile} image={cfg.mtl.image_size} batch/task={cfg.mtl.batch_size} device={device_name(device)} threads={torch.get_num_threads()} repeats={a.repeats}")
    print(f"{'backbone':<28} {'task mix':<12} {'median ms/step':>15} {'min ms/step':>12}")
    for n in names:
        for row in bench(cfg, n, mixes, a.repeats, device): print(f"{row[0]:<28} {row[1]:<12} {row[2]:>15.1f} {row[3]:>12.1f}")


if __name__ == "__main__":
    main()
