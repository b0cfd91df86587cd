"""Speed and memory of `cad_nb.metrics` at the scale of a 3CAD category, beside the straightforward way.

    .venv/bin/python tests/benchmarks/bench_metrics.py                      # 5,000 maps of 256 x 256
    .venv/bin/python tests/benchmarks/bench_metrics.py --maps 500 --baseline-maps 200   # a quick look

Every measurement runs in a fresh subprocess, one after the other, so that its peak resident memory
(`ru_maxrss`, the synthetic data included) is its own. The data is the same seeded synthetic category in
each: masks with elliptic defects on a share of the images, smooth noisy float32 maps that score defects
higher. Timings exclude making the data.

The straightforward way is scikit-learn's `roc_auc_score` and `average_precision_score` over the pooled
pixels, `roc_auc_score` over image maxima, and a PRO loop over 200 fixed thresholds (binarise the maps,
count false positives, overlap per region with `np.bincount`). It computes no 3CAD per-image PRO and its
AUPRO is only approximate, both in its favour. scikit-learn needs several GB per 100 million pixels (int64
sort indices, float64 cumulative sums), so by default it runs on the first `--baseline-maps` maps and the
engine is timed on that same subset too: the speed-up is measured at equal size. Its time at full size is
also given, extrapolated linearly (optimistic for it: sorting grows faster than linearly).
"""
from __future__ import annotations
import argparse, json, os, resource, subprocess, sys, time

import numpy as np
from scipy import ndimage

CHUNK = 250  # maps generated per seeded chunk, so that a smaller category is a prefix of a larger one


def make_category(n_maps: int, size: int = 256, seed: int = 0, defective_fraction: float = 0.4):
    "Masks (bool) and maps (float32) N x size x size of a synthetic category, reproducible by seed."
    masks = np.zeros((n_maps, size, size), bool)
    maps = np.empty((n_maps, size, size), np.float32)
    yy, xx = np.mgrid[:size, :size]
    grid = np.linspace(0, 16, size)
    upsample = np.maximum(0, 1 - np.abs(grid[:, None] - np.arange(17)[None])).astype(np.float32)  # bilinear
    for start in range(0, n_maps, CHUNK):
        rng = np.random.default_rng([seed, start])
        stop = min(start + CHUNK, n_maps)
        for i in range(start, stop):
            if rng.random() >= defective_fraction: continue
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(0, size, 2); ry, rx = rng.uniform(1.5, 24, 2)
                y0, y1 = max(cy - int(ry) - 1, 0), min(cy + int(ry) + 2, size)
                x0, x1 = max(cx - int(rx) - 1, 0), min(cx + int(rx) + 2, size)
                masks[i, y0:y1, x0:x1] |= ((yy[y0:y1, x0:x1] - cy) / ry) ** 2 + ((xx[y0:y1, x0:x1] - cx) / rx) ** 2 <= 1
        low = upsample @ rng.random((stop - start, 17, 17), dtype=np.float32) @ upsample.T
        strength = rng.random((stop - start, 1, 1), dtype=np.float32)
        maps[start:stop] = 0.5 * low + 0.3 * rng.random(low.shape, dtype=np.float32) + 0.6 * strength * masks[start:stop]
    return masks, maps


def straightforward(masks, maps, n_thresholds: int = 200, fpr_limit: float = 0.3) -> dict:
    "The usual way: scikit-learn over pooled pixels and a PRO loop over fixed thresholds."
    from sklearn.metrics import roc_auc_score, average_precision_score
    result = dict(i_auroc=roc_auc_score(masks.any((1, 2)), maps.max((1, 2))),
                  p_auroc=roc_auc_score(masks.ravel(), maps.ravel()),
                  p_ap=average_precision_score(masks.ravel(), maps.ravel()))
    regions, n_regions = np.zeros(masks.shape, np.int32), 0
    for i in range(len(masks)):
        labels, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
        regions[i] = np.where(labels > 0, labels + n_regions, 0); n_regions += n
    sizes = np.bincount(regions[masks], minlength=n_regions + 1)[1:]
    normal = ~masks; n_normal = np.count_nonzero(normal)
    fprs, pros = [], []
    for t in np.linspace(maps.max(), maps.min(), n_thresholds):
        above = maps >= t
        fprs.append(np.count_nonzero(above & normal) / n_normal)
        pros.append(np.mean(np.bincount(regions[above & masks], minlength=n_regions + 1)[1:] / sizes))
    fprs, pros = np.r_[0.0, fprs], np.r_[0.0, pros]
    inside = fprs <= fpr_limit
    x, y = np.r_[fprs[inside], fpr_limit], np.r_[pros[inside], np.interp(fpr_limit, fprs, pros)]
    result["aupro"] = float(np.trapezoid(y, x) / fpr_limit)
    return result


def run_child(args):
    "One measurement in this process: print a JSON line with seconds, peak memory and the metrics."
    from cad_nb.metrics import MetricAccumulator, evaluate
    masks, maps = make_category(args.maps, args.size, args.seed)
    data_gb = (masks.nbytes + maps.nbytes) / 1e9
    start = time.perf_counter()
    if args.child == "evaluate": result = evaluate(masks, maps)
    elif args.child == "accumulator":
        acc = MetricAccumulator()
        for i in range(0, len(maps), args.batch): acc.update(masks[i:i + args.batch], maps[i:i + args.batch])
        result = acc.compute()
    else: result = straightforward(masks, maps)
    seconds = time.perf_counter() - start
    print(json.dumps(dict(seconds=seconds, peak_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                          data_gb=data_gb, defect_share=float(masks.mean()), defective_maps=int(masks.any((1, 2)).sum()),
                          metrics={k: float(v) for k, v in result.items()})))


def measure(method: str, n_maps: int, args) -> dict:
    "Run one measurement in a fresh subprocess and return its JSON."
    cmd = [sys.executable, __file__, "--child", method, "--maps", str(n_maps), "--size", str(args.size),
           "--seed", str(args.seed), "--batch", str(args.batch)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode: raise RuntimeError(f"{method} on {n_maps} maps failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", type=int, default=5000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--baseline-maps", type=int, default=1000, help="maps for the straightforward way (<= --maps)")
    ap.add_argument("--batch", type=int, default=32, help="batch size fed to the streaming accumulator")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=["evaluate", "accumulator", "straightforward"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child: return run_child(args)
    n_base = min(args.baseline_maps, args.maps)
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})", flush=True)
    runs = []
    for method, n in [("evaluate", args.maps), ("accumulator", args.maps), ("evaluate", n_base), ("straightforward", n_base)]:
        r = measure(method, n, args); r.update(method=method, maps=n); runs.append(r)
        print(f"  {method:15s} {n:5d} maps  {r['seconds']:7.1f} s  peak {r['peak_gb']:.2f} GB", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    px = lambda n: n * args.size * args.size / 1e6
    print(f"\nCategory: {args.maps} maps of {args.size}x{args.size} = {px(args.maps):.0f} M pixels, "
          f"{runs[0]['defective_maps']} defective maps, {100 * runs[0]['defect_share']:.2f}% defect pixels")
    print(f"\n| method | maps | M pixels | seconds | peak RSS GB (data incl.) | data GB | i_auroc | p_auroc | p_ap | aupro | pro_3cad |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        m = r["metrics"]
        print(f"| {r['method']} | {r['maps']} | {px(r['maps']):.0f} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | {r['data_gb']:.2f} | "
              + " | ".join(f"{m[k]:.6f}" if k in m else "-" for k in ("i_auroc", "p_auroc", "p_ap", "aupro", "pro_3cad")) + " |")
    ours, base = runs[2], runs[3]
    print(f"\nSpeed-up at equal size ({n_base} maps): {base['seconds'] / ours['seconds']:.1f}x")
    if n_base < args.maps:
        extrapolated = base["seconds"] * args.maps / n_base
        print(f"Straightforward way at {args.maps} maps, extrapolated linearly: {extrapolated:.0f} s "
              f"-> speed-up of evaluate there >= {extrapolated / runs[0]['seconds']:.1f}x")
    diff = max(abs(ours["metrics"][k] - base["metrics"][k]) for k in ("i_auroc", "p_auroc", "p_ap"))
    print(f"Largest difference to scikit-learn (i_auroc, p_auroc, p_ap): {diff:.2e}; "
          f"AUPRO exact {ours['metrics']['aupro']:.6f} vs 200 thresholds {base['metrics']['aupro']:.6f}")
    same = all(abs(runs[0]["metrics"][k] - runs[1]["metrics"][k]) <= 1e-12 for k in runs[0]["metrics"])
    print(f"evaluate and the streaming accumulator agree: {same}")


if __name__ == "__main__":
    main()
