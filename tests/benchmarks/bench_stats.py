"""Speed of `cad_nb.stats.dataset_stats`: images/s on the `full` embedded benchmark, and wall time on a
3CAD-sized folder (about 27,000 images in 8 categories, split like 3CAD's 10,493 train / 5,084 good test /
11,462 defective test, sides 288-1024 px).

The 3CAD-sized folder is built from a pool of distinct images and masks rescaled to 3CAD's sizes and
linked many times over (hard links), so it costs seconds to build, and every one of its 27,000 images is
opened, and each of its masks decoded and measured, like any other folder.

    .venv/bin/python tests/benchmarks/bench_stats.py [--workers 1 2] [--pool 300] [--keep DIR]
"""
import argparse, os, shutil, tempfile, time
from pathlib import Path

import numpy as np
from PIL import Image

from cad_nb.data import list_categories, read_category
from cad_nb.stats import dataset_stats
from cad_nb.benchmark import make_3c_benchmark

THREECAD = dict(train=10_493, good=5_084, defect=11_423, categories=8, side=(288, 1024))


def timed(root, workers):
    t0 = time.perf_counter(); images, regions = dataset_stats(root, workers=workers); s = time.perf_counter() - t0
    return len(images), len(regions), s


def build_3cad_sized(full_root, out, pool_size, seed=0):
    "A folder in the 3CAD layout with 27,000 images hard-linked from a pool rescaled to 288-1024 px."
    rng = np.random.default_rng(seed)
    defective = [s for c in list_categories(full_root) for s in read_category(full_root, c) if s.label]
    good = [s for c in list_categories(full_root) for s in read_category(full_root, c) if not s.label]
    pool = out / "_pool"; pool.mkdir(parents=True)
    def rescaled(sample, i):
        h, w = (int(v) for v in rng.integers(*THREECAD["side"], size=2))
        img = pool / f"{i}.png"; Image.open(sample.image_path).convert("RGB").resize((w, h)).save(img)
        if sample.mask_path is None: return img, None
        mask = pool / f"{i}_m.png"; Image.open(sample.mask_path).resize((w, h), Image.NEAREST).save(mask)
        return img, mask
    pool_good = [rescaled(good[i], f"g{i}") for i in rng.choice(len(good), pool_size // 2, replace=False)]
    pool_bad = [rescaled(defective[i], f"d{i}") for i in rng.choice(len(defective), pool_size // 2, replace=False)]
    per_cat = {k: THREECAD[k] // THREECAD["categories"] for k in ("train", "good", "defect")}
    for c in range(THREECAD["categories"]):
        cat = out / f"Category_{c}"
        for part, n in per_cat.items():
            folder = cat / ("train/good" if part == "train" else "test/good" if part == "good" else "test/defect")
            folder.mkdir(parents=True, exist_ok=True)
            src = pool_bad if part == "defect" else pool_good
            if part == "defect": (cat / "ground_truth/defect").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img, mask = src[(i * 7 + c) % len(src)]
                os.link(img, folder / f"{i:05d}.png")
                if mask is not None: os.link(mask, cat / "ground_truth/defect" / f"{i:05d}.png")
    shutil.rmtree(pool)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pool", type=int, default=300, help="distinct images behind the 3CAD-sized folder")
    ap.add_argument("--cache", default=".cache/cad_nb")
    ap.add_argument("--keep", help="build the 3CAD-sized folder here and keep it")
    a = ap.parse_args()
    full = make_3c_benchmark(a.cache, "full", 0)
    print(f"machine: {os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'data':<34}{'workers':>8}{'images':>9}{'regions':>9}{'seconds':>9}{'images/s':>10}")
    for w in a.workers:
        n, r, s = timed(full, w); print(f"{'embedded full (256-480 px)':<34}{w:>8}{n:>9}{r:>9}{s:>9.1f}{n / s:>10.0f}")
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(dir=a.cache))
    try:
        t0 = time.perf_counter(); build_3cad_sized(full, tmp, a.pool); built = time.perf_counter() - t0
        for w in a.workers:
            n, r, s = timed(tmp, w); print(f"{'3CAD-sized (27,000, 288-1024 px)':<34}{w:>8}{n:>9}{r:>9}{s:>9.1f}{n / s:>10.0f}")
        print(f"(3CAD-sized folder built in {built:.0f} s from {a.pool} distinct images; load average after: {os.getloadavg()[0]:.2f})")
    finally:
        if not a.keep: shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
