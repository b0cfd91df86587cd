"""A method's validation curve on the embedded benchmark (issue 20): how many epochs the `cpu` profile trains it.
Scored every --every epochs on the 40 held-out normal training images of each category (`data.val_images`, every
other one with a synthesised anomaly), never on a test split (no test image is scored).

    python tests/benchmarks/validation_curve.py --method SimpleNet --categories Aluminum_Plate Brick --epochs 16 --every 2
"""
import argparse, tempfile, time

import torch

from cad_nb.benchmark import CATEGORIES, benchmark_root
from cad_nb.registry import get_method
from cad_nb.runner import category_datasets, make_teacher, run_method, split_validation, val_score
from cad_nb.settings import load_profile


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="SimpleNet", help="a registered method trained in epochs")
    p.add_argument("--categories", nargs="+", default=list(CATEGORIES)[:2])
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--every", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    curves = {}
    with tempfile.TemporaryDirectory() as runs:
        method = get_method(a.method)
        cfg = load_profile("cpu", sets={"runtime.run_dir": runs, f"{method.section}.epochs": a.epochs})
        root = benchmark_root(cfg)
        for category in a.categories:
            train, _ = category_datasets(root, category, cfg.data.image_size, seed=cfg.runtime.seed,
                                         mask_resize=cfg.data.mask_resize)
            train, val = split_validation(train, cfg.data.val_images, cfg)
            t0 = time.time()
            res = run_method(method.name, cfg, train, val, make_teacher(cfg), f"val_{category}", progress=False,
                             val_set=val, track_every=a.every)
            curves[category] = res["history"]["callback"]
            batch = getattr(cfg, method.section).batch_size
            print(f"{method.name} on {category}: {len(train)} training images, {a.epochs} epochs of batch {batch}, "
                  f"{time.time() - t0:.0f} s; validation I-AUROC / P-AUROC / AUPRO (%), "
                  "their mean:", flush=True)
            for pt in curves[category]:
                print(f"  epoch {pt['epoch'] + 1:3d}: {100 * pt['i_auroc']:.1f} / {100 * pt['p_auroc']:.1f} / "
                      f"{100 * pt['aupro']:.1f}   {100 * val_score(pt):.1f}", flush=True)
    epochs = [pt["epoch"] + 1 for pt in next(iter(curves.values()))]
    print("mean over the categories of the validation mean (%):")
    for i, e in enumerate(epochs):
        print(f"  epoch {e:3d}: {100 * sum(val_score(c[i]) for c in curves.values()) / len(curves):.1f}")


if __name__ == "__main__":
    main()
