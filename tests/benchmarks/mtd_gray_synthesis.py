"""Does CFRG (and DeSTSeg) on Magnetic Tile Defects learn that colour means "anomaly"? (issue 17, a diagnosis)

MTD's tiles are grey; the anomalies CFRG and DeSTSeg train on blend DTD textures, which are coloured. A model can
then find every synthesised anomaly from colour alone, a cue no real defect carries. This script measures the cue
(the mean chroma, max - min over the channels, inside the synthesised masks against the real test images), then
trains the methods again with `synthesis.gray = true` (each texture's luminance blended instead of its colours)
under notebook 22's protocol (epochs chosen on the validation images, patience `real.patience`), and writes their
validation and test metrics beside notebook 22's rows (figures/mtd_results.csv, colour textures). A diagnosis:
it scores the test split to explain a result, and changes no setting of the notebook.

    python tests/benchmarks/mtd_gray_synthesis.py --real-data .cache/real
"""
import argparse, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cad_nb.core import save_table, device_name, get_device, git_commit
from cad_nb.settings import load_profile
from cad_nb.runner import category_datasets, make_teacher, run_method, split_validation, val_score
from cad_nb.synthesis import synthesizer
from cad_nb.synthesis import SynthesisDataset


def chroma(images, masks=None) -> float:
    "Mean of (max - min over the channels) of 3 x H x W images in [0, 1], inside `masks` when given."
    values = [(x.amax(0) - x.amin(0))[m[0] > 0.5] if m is not None else (x.amax(0) - x.amin(0)).flatten()
              for x, m in zip(images, masks if masks is not None else [None] * len(images))]
    return float(torch.cat(values).mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real-data", required=True, help="the folder `cad-nb data get mtd` and `dtd` prepared")
    p.add_argument("--methods", nargs="+", default=["CFRG", "DeSTSeg"])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--out", default="figures/diagnosis")
    a = p.parse_args(argv)
    root = Path(a.real_data).resolve()
    cfg = load_profile(a.profile, sets={"real.root": str(root), "synthesis.textures": "dtd",
                                        "synthesis.dtd_root": str(root / "dtd/images")})
    cfg = cfg.updated({"destseg.seg_steps": cfg.real.destseg_seg_steps})
    dev = get_device(cfg.runtime.device)
    train_all, test_set = category_datasets(root / "mtd", "MTD", cfg.data.image_size, cfg.real.max_train, cfg.real.max_test, cfg.runtime.seed)
    rows = []
    for gray in (False, True):
        c = cfg.updated({"synthesis.gray": gray})
        train_set, val_set = split_validation(train_all, c.real.val_images, c)
        synth = SynthesisDataset(train_set, synthesizer(c), seed=c.runtime.seed)
        items = [synth[i] for i in range(0, len(synth), max(1, len(synth) // 64))]
        inside = chroma([x["augmented"] for x in items], [x["synth_mask"] for x in items])
        real = chroma([test_set[i]["image"] for i in range(0, len(test_set), max(1, len(test_set) // 64))])
        print(f"gray={gray}: chroma inside synthesised anomalies {inside:.3f}; in real test images {real:.3f}", flush=True)
        if not gray: continue                                                       # colour rows: notebook 22's
        for name in a.methods:
            t0 = time.time()
            r = run_method(name, c, train_set, test_set, make_teacher(c), f"mtd_gray_{name}", dev, progress=False,
                           val_set=val_set, epochs=c.real.epochs, track_every=1, patience=c.real.patience)
            m = r["metrics"]
            rows.append(dict(method=f"{name}, grey textures", i_auroc=100 * m["i_auroc"], p_auroc=100 * m["p_auroc"],
                             ap=100 * m["p_ap"], aupro=100 * m["aupro"], val_score=100 * val_score(r["val_metrics"]),
                             chosen_epochs=r["best_epoch"] + 1, chroma_in_anomalies=inside, seconds=time.time() - t0))
            print(rows[-1], flush=True)
    colour = pd.read_csv("figures/mtd_results.csv").set_index("method")
    for name in a.methods:
        if name in colour.index:
            rows.append(dict(method=f"{name}, colour textures (notebook 22)",
                             **{k: colour.loc[name, k] for k in ("i_auroc", "p_auroc", "ap", "aupro")}))
    table = pd.DataFrame(rows).set_index("method")
    note = (f"Magnetic Tile Defects, notebook 22's protocol (profile {a.profile}, {cfg.data.image_size} px, DTD textures, epochs "
            f"chosen on validation). Grey rows: synthesis.gray = true, this script; colour rows: figures/mtd_results.csv. "
            f"Device {device_name(dev)}, commit {git_commit()}. All scores in %.")
    print(save_table(table, a.out, "mtd_gray_synthesis", floatfmt=".1f", note=note).round(2).to_string())


if __name__ == "__main__":
    main()
