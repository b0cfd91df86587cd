"""CPU inference time per image of CFRG and Reverse Distillation at 256x256, batch 1 and batch 16.

Run: .venv/bin/python tests/benchmarks/bench_cfrg_inference.py [--teachers resnet18,wide_resnet50_2] [--threads N]
Times `model.predict` (forward + anomaly map + Gaussian blur + image score), after one warm-up call,
median over repeats; randomly initialised weights (the speed does not depend on them)."""
import argparse, os, statistics, time

import torch

from cad_nb.baselines import ReverseDistillation
from cad_nb.cfrg import CFRG, Teacher


def time_predict(model, batch, size, repeats):
    "Median seconds of model.predict on a batch of random images (after one warm-up call)."
    x = torch.rand(batch, 3, size, size)
    model.predict(x)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter(); model.predict(x); runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", default="resnet18,wide_resnet50_2")
    ap.add_argument("--student", default="efficientnet_b0")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    print(f"CPU inference, {args.size}x{args.size}, torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    rows = []
    for name in args.teachers.split(","):
        torch.manual_seed(0)
        teacher = Teacher(name, pretrained=False)
        models = {"CFRG": CFRG(teacher, args.student), "RD": ReverseDistillation(teacher)}   # paper-sized heads/blocks
        for method, model in models.items():
            model.eval()
            for batch in (1, 16):
                s = time_predict(model, batch, args.size, args.repeats if batch == 1 else max(1, args.repeats - 1))
                rows.append((method, name, batch, 1000 * s / batch, batch / s))
                print(f"  measured {method} / {name} / batch {batch}", flush=True)
    print(f"\n| method | teacher | batch | ms / image | images / s |\n|---|---|---:|---:|---:|")
    for method, name, batch, ms, ips in rows: print(f"| {method} | {name} | {batch} | {ms:.1f} | {ips:.2f} |")


if __name__ == "__main__":
    with torch.no_grad(): main()
