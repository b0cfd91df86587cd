"""CPU inference time per image of CFRG, RD, PaDiM and DeSTSeg at 256x256, batch 1 and batch 16, as the `cpu` and
the `paper` profiles build them (`cad_nb.runner.build_method`).

Run: .venv/bin/python tests/benchmarks/bench_cfrg_inference.py [--profiles cpu,paper] [--threads N] [--out FILE]
Times `model.predict` (forward + anomaly map + smoothing + image score), after one warm-up call, median over
repeats; randomly initialised weights (the speed does not depend on them; PaDiM's Gaussians are fitted on two
random batches). The image size is 256 for both profiles, so the configurations differ only in their models."""
import argparse, os, platform, statistics, time

import torch

from cad_nb.components import Teacher, count_params
from cad_nb.settings import load_profile
from cad_nb.runner import METHODS, build_method


def time_predict(model, batch, size, repeats):
    "Median seconds of model.predict on a batch of random images (after one warm-up call)."
    x = torch.rand(batch, 3, size, size)
    model.predict(x)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter(); model.predict(x); runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def bench_model(name, cfg, teacher, size):
    "The model `name` of profile `cfg`, ready to predict."
    model = build_method(name, cfg, teacher).eval()
    if name == "PaDiM": model.fit_gaussians([torch.rand(4, 3, size, size), torch.rand(4, 3, size, size)])
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="cpu,paper")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls at batch 1 (batch 16: one fewer, at least 1)")
    ap.add_argument("--out", help="also write the table (markdown) to this file")
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    head = (f"CPU inference, {args.size}x{args.size}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})")
    print(head)
    rows = []
    for profile in args.profiles.split(","):
        cfg = load_profile(profile, sets={"teacher.pretrained": False, "data.image_size": args.size})
        teacher = Teacher(cfg.teacher.name, pretrained=False)
        for name in args.methods.split(","):
            model = bench_model(name, cfg, teacher, args.size)
            teacher_name = cfg.destseg.teacher if name == "DeSTSeg" and cfg.destseg.teacher else cfg.teacher.name
            for batch in (1, 16):
                s = time_predict(model, batch, args.size, args.repeats if batch == 1 else max(1, args.repeats - 1))
                rows.append(dict(profile=profile, method=name, teacher=teacher_name, params=count_params(model, trainable=True),
                                 batch=batch, ms=1000 * s / batch))
                print(f"  measured {profile} / {name} / batch {batch}: {1000 * s / batch:.1f} ms/image", flush=True)
            del model
    lines = [head, "", "| profile | method | teacher | trained params | batch | ms / image | images / s |",
             "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['profile']} | {r['method']} | {r['teacher']} | {r['params']:,} | {r['batch']} | {r['ms']:.1f} | {1000 / r['ms']:.2f} |"
              for r in rows]
    ms = {(r["profile"], r["method"], r["batch"]): r["ms"] for r in rows}
    ratios = [f"| {p} | {b} | {ms[p, 'CFRG', b] / ms[p, 'RD', b]:.2f} |" for p in args.profiles.split(",") for b in (1, 16)
              if (p, "CFRG", b) in ms and (p, "RD", b) in ms]
    if ratios: lines += ["", "CFRG time / RD time (same teacher):", "", "| profile | batch | ratio |", "|---|---:|---:|", *ratios]
    print("\n" + "\n".join(lines))
    if args.out:
        with open(args.out, "w") as f: f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    with torch.no_grad(): main()
