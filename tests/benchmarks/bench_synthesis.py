"""Samples per second of `cad_nb.synthesis` at 256 x 256.

    .venv/bin/python tests/benchmarks/bench_synthesis.py                  # CPU (or the GPU with --device auto/cuda)
    .venv/bin/python tests/benchmarks/bench_synthesis.py --device cuda --batch 64
    .venv/bin/python tests/benchmarks/bench_synthesis.py --dtd-root ~/data/dtd   # DTD textures read from disk
    .venv/bin/python tests/benchmarks/bench_synthesis.py --threads 1 --workers 0  # the batched path on one thread

Three ways the synthesis is used: one image at a time (`AnomalySynthesizer.__call__`, NumPy in and out,
what a `Dataset` does; timed with one torch thread, as in a DataLoader worker), through `SynthesisDataset` and a `DataLoader` with `--workers` processes, and whole
batches on `--device` (`AnomalySynthesizer.batch`). The embedded textures are resized once beforehand
(steady state; DTD images are read from disk on every use), each path is warmed up with one call, then
timed over at least `--samples` samples.
"""
from __future__ import annotations
import argparse, os, time

import numpy as np
import torch

from cad_nb.core import device_name, get_device
from cad_nb.synthesis import AnomalySynthesizer, SynthesisDataset


class RandomImages(torch.utils.data.Dataset):
    "Random images as AnomalyDataset-like dicts, made on the fly."
    def __init__(self, n, size): self.n, self.size = n, size
    def __len__(self): return self.n
    def __getitem__(self, i): return dict(image=torch.rand(3, self.size, self.size, generator=torch.Generator().manual_seed(i)))


def timed(fn, n_samples: int, per_call: int, sync=lambda: None) -> float:
    "Samples per second of `fn` (which makes `per_call` samples), after one warm-up call."
    fn(); sync()
    calls = max(1, -(-n_samples // per_call))
    start = time.perf_counter()
    for _ in range(calls): fn()
    sync()
    return calls * per_call / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (for the batched path)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--samples", type=int, default=256, help="samples timed per path")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the Dataset path (0: skip it)")
    ap.add_argument("--dtd-root", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the batched path (default: torch's)")
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    device = get_device(args.device)
    synth = AnomalySynthesizer(args.dtd_root)
    if args.dtd_root is None:                       # steady state: every embedded texture resized once
        for i in range(len(synth.textures)): synth.textures.get(i, args.size, args.size)
    rng = np.random.default_rng(0)
    image = rng.random((args.size, args.size, 3)).astype(np.float32)
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()})")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                        # what a DataLoader worker runs with
    rows = [("per sample (NumPy in and out, 1 thread)", "CPU", 1, timed(lambda: synth(image, rng), args.samples, 1))]
    torch.set_num_threads(threads)
    if args.workers:
        ds = SynthesisDataset(RandomImages(args.samples + args.batch, args.size), synth)
        def epoch():
            for _ in torch.utils.data.DataLoader(ds, batch_size=args.batch, num_workers=args.workers): pass
        rows.append((f"SynthesisDataset + DataLoader ({args.workers} workers)", "CPU", args.batch,
                     timed(epoch, args.samples, len(ds))))
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    n_threads = torch.get_num_threads()
    rows.append((f"batch (torch, {n_threads} thread{'s' * (n_threads > 1)})", device_name(device), args.batch,
                 timed(lambda: synth.batch(images, generator), args.samples, args.batch, sync)))
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(f"Anomaly synthesis at {args.size}x{args.size}, textures: {'DTD ' + args.dtd_root if args.dtd_root else 'embedded'}\n")
    print("| path | device | batch | samples / s |\n|---|---|---|---|")
    for path, dev, batch, rate in rows: print(f"| {path} | {dev} | {batch} | {rate:.0f} |")


if __name__ == "__main__":
    main()
