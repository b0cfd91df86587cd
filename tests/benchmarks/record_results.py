"""The metrics of every method on a profile's benchmark, recorded so that a refactor can show it changed no result.

    python tests/benchmarks/record_results.py --profile smoke --out before_smoke.json
    python tests/benchmarks/record_results.py --profile cpu --categories 1 --out before_cpu.json
    python tests/benchmarks/record_results.py --compare before_smoke.json after_smoke.json

One thread (bit-equality holds for a fixed thread count and library versions only), a fresh run folder (no checkpoint
is read back), no validation tracking. Anomaly methods: I-AUROC, P-AUROC, AP, AUPRO per category and method, test set
as the benchmark notebook subsamples it; multi-task: one CoBa + scheduler run on the car benchmark.
"""
from __future__ import annotations
import argparse, json, math, platform, sys, tempfile
from pathlib import Path

import torch


def anomaly_rows(cfg, categories: int) -> dict:
    "metrics[category/method] of every registered anomaly method on the first `categories` categories."
    from cad_nb.data import list_categories
    from cad_nb.runner import METHODS, category_datasets, make_teacher, run_method, split_validation
    from cad_nb.benchmark import benchmark_root
    root = benchmark_root(cfg)
    teacher, found = make_teacher(cfg), {}
    for cat in list_categories(root)[:categories]:
        train, test = category_datasets(root, cat, cfg.data.image_size, cfg.bench.max_train, cfg.bench.max_test, cfg.runtime.seed,
                                        cfg.data.mask_resize)
        train, val = split_validation(train, cfg.data.val_images, cfg)
        for name in METHODS:
            res = run_method(name, cfg, train, test, teacher, f"{cat}_{name}", progress=False)
            found[f"{cat}/{name}"] = res["metrics"]
            print(cat, name, {k: round(v, 4) for k, v in res["metrics"].items()}, flush=True)
    return found


def multitask_rows(cfg) -> dict:
    "metrics of one CoBa + scheduler multi-task run on the profile's car benchmark."
    from cad_nb.mtl import experiment_data, run_experiment
    from cad_nb.benchmark import car_benchmark_root
    backbone = cfg.mtl.backbones[0]
    data = experiment_data(cfg, car_benchmark_root(cfg))
    res = run_experiment(cfg, data, backbone, "CoBa + scheduler", "coba", "adaptive", seed=cfg.runtime.seed)
    print("multi-task", {k: round(v, 4) for k, v in res["metrics"].items()}, flush=True)
    return {"multitask/CoBa + scheduler": res["metrics"]}


def cpu_model() -> str:
    "The processor's model name (Linux: /proc/cpuinfo), else `platform.processor()`."
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(profile: str, categories: int, multitask: bool) -> dict:
    from cad_nb.settings import load_profile
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as runs:
        cfg = load_profile(profile, sets={"runtime.run_dir": runs, "runtime.threads": 1, "mtl.threads": 1})
        found = anomaly_rows(cfg, categories)
        if multitask: found.update(multitask_rows(cfg))
    return dict(
        profile=profile,
        torch=torch.__version__,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),  # the vector kernels torch picked (AVX2, AVX512, ...)
        cpu_model=cpu_model(),  # two AVX512 machines (an AMD EPYC and the one before) differed in 25 pixel figures
        threads=1,
        metrics=found,
    )


def compare(before: dict, after: dict) -> int:
    "Print every metric that differs; the number of differences."
    diffs = 0
    for key, metrics in before["metrics"].items():
        for name, value in metrics.items():
            new = after["metrics"].get(key, {}).get(name)
            same = new is not None and (new == value or (math.isnan(value) and math.isnan(new)))
            if not same:
                diffs += 1
                print(f"{key} {name}: {value!r} -> {new!r}")
    print(f"{diffs} differences over {sum(len(m) for m in before['metrics'].values())} metrics")
    return diffs


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--categories", type=int, default=2)
    ap.add_argument("--no-multitask", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path)
    a = ap.parse_args()
    if a.compare: sys.exit(1 if compare(*(json.loads(p.read_text()) for p in a.compare)) else 0)
    result = record(a.profile, a.categories, not a.no_multitask)
    a.out.write_text(json.dumps(result, indent=1))
