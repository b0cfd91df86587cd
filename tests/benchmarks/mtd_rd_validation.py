"""RD's validation curve on Magnetic Tile Defects (issue 16): does the cpu budget chosen on the embedded benchmark
(30 epochs, lr 5e-3) suit MTD's 761 training images? Scored on 40 held-out defect-free training images, every
other with a synthesised anomaly (never the test split).

    cad-nb data get mtd --from ../shared/datasets/magnetic_tile --out /tmp/real
    python tests/benchmarks/mtd_rd_validation.py /tmp/real/mtd --every 2
"""
import argparse, tempfile

import torch

from cad_nb.settings import load_profile
from cad_nb.runner import category_datasets, make_teacher, run_method, split_validation


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root"); p.add_argument("--category", default="MTD"); p.add_argument("--every", type=int, default=2)
    p.add_argument("--threads", type=int, default=2); p.add_argument("--lr", type=float)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as runs:
        cfg = load_profile("cpu", sets={"runtime.run_dir": runs, "data.root": a.root, "rd.lr": a.lr})
        train, _ = category_datasets(cfg.path("data.root"), a.category, cfg.data.image_size, seed=cfg.runtime.seed)
        train, val = split_validation(train, cfg.data.val_images, cfg)
        res = run_method("RD", cfg, train, val, make_teacher(cfg), "mtd_rd", progress=False, val_set=val, track_every=a.every)
    print(f"RD on {a.category}: {len(train)} training images, lr {cfg.rd.lr}, {cfg.rd.epochs} epochs; validation P-AUROC / AUPRO / I-AUROC (%):")
    for pt in res["history"]["callback"]:
        print(f"  epoch {pt['epoch'] + 1:3d} step {pt['step']:5d}: {100 * pt['p_auroc']:.1f} / {100 * pt['aupro']:.1f} / {100 * pt['i_auroc']:.1f}")


if __name__ == "__main__":
    main()
