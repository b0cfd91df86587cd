"""Why RD (and CFRG's recovery branch, the same bottleneck + decoder) trail PaDiM on the cpu profile.

Every figure is measured on VALIDATION data, two kinds, and no test split is read:
  synth: `data.val_images` defect-free training images held out of training, every other one carrying a synthesised
         anomaly (`cad_nb.runner.split_validation`, what the tables notebook tracks);
  draw:  the test split of a second, independent draw of the embedded benchmark (seed `--draw-seed`, 1): the same
         generator and defect kinds as the benchmark the tables use (seed 0), other images; a seeded 160 of them.

One variant changes one thing against the cpu profile's RD as it was before issue 16 ("base": Lite0 ImageNet teacher tapped at strides 4/8/16,
bottleneck/decoder of one block per stage at the release's width proportions, 128 px, Adam lr 2e-3 batch 8,
RD4AD's global cosine loss, map = sum of the three scales' 1 - cos blurred with sigma 4):
  (a) widths and depth, (b) tapped stages, (c) image size, (d) lr and batch, (e) training length (each run is
  a curve: validation metrics every `--every` steps), the loss, and (f) the map's scales and blur, scored on the
  trained baseline model. PaDiM on the same features and the same validation images is the reference.

    python tests/benchmarks/diagnose_distillation.py --categories Brick Camera_Cover --steps 600 --every 100 --out figures/diagnosis
writes <out>/<name>_{curves,final,map,kinds}.{csv,md} and <name>_curves.png (--name, default distill_diagnosis); the
README's "Why RD and CFRG trailed PaDiM" lists the runs behind figures/diagnosis/.
"""
from __future__ import annotations
import argparse, json, math, time
from pathlib import Path

import numpy as np, pandas as pd, torch

from cad_nb.baselines import PaDiM, ReverseDistillation, fit_padim, rd_step
from cad_nb.components import MapStyle, Teacher, cosine_distance, global_cosine_loss
from cad_nb.core import save_table, save_figure
from cad_nb.settings import load_profile
from cad_nb.data import list_categories
from cad_nb.metrics import evaluate
from cad_nb.components import map_style
from cad_nb.registry import score_set
from cad_nb.runner import category_datasets, split_validation
from cad_nb.benchmark import benchmark_root
from cad_nb.train import fit, predict


def pixel_cosine_loss(targets, preds) -> torch.Tensor:
    "Sum over scales of the mean per-pixel 1 - cos: the quantity the map measures."
    return sum(cosine_distance(t, p).mean() for t, p in zip(targets, preds))

def relative_l2(a, b) -> torch.Tensor:
    "Per-pixel |a - b|^2 / (|a|^2 + |b|^2), B x 1 x H x W in [0, 2]: zero only when a == b, so it sees magnitude, unlike 1 - cos."
    a, b = a.float(), b.float()
    return ((a - b) ** 2).sum(1, keepdim=True) / ((a ** 2).sum(1, keepdim=True) + (b ** 2).sum(1, keepdim=True) + 1e-8)

def pixel_relative_l2_loss(targets, preds) -> torch.Tensor:
    return sum(relative_l2(t, p).mean() for t, p in zip(targets, preds))

LOSSES = dict(global_cos=global_cosine_loss, pixel_cos=pixel_cosine_loss, relative_l2=pixel_relative_l2_loss)
DISTANCES = dict(global_cos=cosine_distance, pixel_cos=cosine_distance, relative_l2=relative_l2)

BASE = dict(strides=(4, 8, 16), width=1.0, blocks=1, size=128, lr=2e-3, batch=8, loss="global_cos", code_stride=32, sigma=4.0)
VARIANTS = {                                          # name: what changes against BASE
    "base (cpu before #16)": {},
    "(a) width x2": dict(width=2.0),
    "(a) width x4": dict(width=4.0),
    "(a) release depth 3 / (3,4,6)": dict(blocks="release"),
    "(a) code at 1/16": dict(code_stride=16),
    "(b) taps 8/16/32": dict(strides=(8, 16, 32)),
    "(c) 256 px": dict(size=256),
    "(d) lr 5e-4": dict(lr=5e-4),
    "(d) lr 5e-3 (RD4AD)": dict(lr=5e-3),
    "(d) lr 5e-3 batch 16 (RD4AD)": dict(lr=5e-3, batch=16),
    "loss per-pixel cos": dict(loss="pixel_cos"),
    "loss+map relative L2": dict(loss="relative_l2"),
    "code at 1/16, lr 5e-3": dict(code_stride=16, lr=5e-3),
    "(f) blur sigma 2": dict(sigma=2.0),
    "lr 5e-3, sigma 2": dict(lr=5e-3, sigma=2.0),
}


class WithDistance(torch.nn.Module):
    "An RD model whose map sums `distance` over the scales instead of 1 - cos."
    def __init__(self, rd, distance):
        super().__init__(); self.rd, self.distance = rd, distance
    @torch.no_grad()
    def predict(self, images):
        out, style = self.rd(images), self.rd.map_style
        return style.scores(sum(style.upsample(self.distance(t, r), out["size"]) for t, r in zip(out["t"], out["r"])))


def type_scores(model, dataset, **extra) -> list:
    "P-AUROC of each defect kind: its pixels (images of that kind alone) against every normal pixel of the set."
    from cad_nb.metrics import make_pool, pool_auroc
    pred = predict(model, dataset, 16)
    normal = pred["maps"][~pred["masks"]]
    kinds = [getattr(s, "defect_types", ()) for s in getattr(dataset, "samples", [])]
    rows = []
    for kind in sorted({k[0] for k in kinds if len(k) == 1}):
        idx = [i for i, k in enumerate(kinds) if tuple(k) == (kind,)]
        defect = np.concatenate([pred["maps"][i][pred["masks"][i]] for i in idx])
        if len(defect): rows.append(dict(**extra, kind=kind, images=len(idx), p_auroc=100 * pool_auroc(make_pool(normal.copy(), defect))))
    return rows


def score(model, dataset, cfg, **extra):
    "The runner's metrics of `model` on `dataset`, in %, with `extra` columns."
    return {**extra, **{k: 100 * v for k, v in score_set(model, dataset, cfg)[1].items()}}

def score_all(model, vals, cfg, **extra) -> list:
    "One row per validation set."
    return [score(model, ds, cfg, val=kind, **extra) for kind, ds in vals.items()]

def validation_sets(cfg, root, draw_root, cat, size) -> tuple:
    "(train minus the held-out images, {synth: ValidationSet, draw: second draw's test split})."
    train, _ = category_datasets(root, cat, size, seed=cfg.runtime.seed)
    train, synth = split_validation(train, cfg.data.val_images, cfg)
    vals = dict(synth=synth)
    if draw_root is not None: vals["draw"] = category_datasets(draw_root, cat, size, max_test=160, seed=cfg.runtime.seed)[1]
    return train, vals


def run_variant(name, change, cfg, root, draw_root, cat, steps, every, teachers, log):
    v = {**BASE, **change}
    train, vals = validation_sets(cfg, root, draw_root, cat, v["size"])
    teacher = teachers.setdefault(v["strides"], Teacher(cfg.teacher.name, True, strides=v["strides"]))
    blocks = dict(bottleneck_blocks=3, decoder_blocks=(3, 4, 6)) if v["blocks"] == "release" else dict(bottleneck_blocks=v["blocks"], decoder_blocks=v["blocks"])
    torch.manual_seed(cfg.runtime.seed)
    style = MapStyle(v["sigma"], cfg.maps.padding, bool(cfg.maps.align_corners))
    model = ReverseDistillation(teacher, map_style=style, width=v["width"], code_stride=v["code_stride"], **blocks)
    per_epoch = math.ceil(len(train) / v["batch"])
    epochs = math.ceil(steps / per_epoch)
    loss = LOSSES[v["loss"]]
    def step(net, batch, device):
        out = net(batch["image"].to(device))
        return dict(loss=loss(out["t"], out["r"]))
    scored = WithDistance(model, DISTANCES[v["loss"]]) if v["loss"] == "relative_l2" else model
    rows, t0 = score_all(scored, vals, cfg, step=0), time.time()
    def callback(epoch, m):
        done = (epoch + 1) * per_epoch
        if done // every > epoch * per_epoch // every or epoch + 1 == epochs:
            rows.extend(score_all(scored, vals, cfg, step=done))
    fit(model, step, train, epochs=epochs, batch_size=v["batch"], lr=v["lr"], gamma=1.0, seed=cfg.runtime.seed, progress=False, callback=callback)
    train_s = time.time() - t0
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for r in rows: r.update(category=cat, variant=name, params=params, train_s=round(train_s, 1))
    for kind in vals:
        log(f"{cat:14s} {name:30s} {kind:5s} {params:>9,d} {train_s:5.0f}s " +
            " ".join(f"{r['step']}:{r['p_auroc']:.1f}/{r['aupro']:.1f}" for r in rows if r["val"] == kind))
    return scored, vals, rows


@torch.no_grad()
def map_variants(model, val, cfg, cat, kind):
    "The trained baseline's per-scale discrepancies recombined: which scales, which blur."
    model.eval(); maps, masks, labels = [], [], []
    for b in torch.utils.data.DataLoader(val, batch_size=16):
        out = model(b["image"])
        maps.append(torch.cat([model.map_style.upsample(cosine_distance(t, r), out["size"]) for t, r in zip(out["t"], out["r"])], 1))
        masks.append(b["mask"][:, 0] > 0.5); labels.append(torch.as_tensor(b["label"]))
    per_scale, masks, labels = torch.cat(maps), torch.cat(masks).numpy(), torch.cat(labels).numpy()
    rows = []
    for scales in [(0, 1, 2), (1, 2), (0, 1), (0,), (1,), (2,)]:
        for sigma in (0, 2, 4, 8):
            style = MapStyle(sigma, cfg.maps.padding, bool(cfg.maps.align_corners))
            m, s = style.scores(per_scale[:, list(scales)].sum(1, keepdim=True))
            found = evaluate(masks, m.numpy(), s.numpy(), labels=labels, on_undefined="nan")
            rows.append(dict(val=kind, category=cat, scales="+".join(STRIDE_NAMES[i] for i in scales), sigma=sigma,
                             **{k: 100 * v for k, v in found.items()}))
    return rows

STRIDE_NAMES = ("1/4", "1/8", "1/16")


def run_cfrg(overrides: dict, cfg_name, root, draw_root, cat, log, every_epochs=2) -> list:
    "CFRG as the runner trains it (profile `cfg_name` with `overrides`), scored on the draw validation set every `every_epochs` epochs."
    from cad_nb.runner import make_teacher, run_method
    import tempfile
    with tempfile.TemporaryDirectory() as runs:
        cfg = load_profile(cfg_name, sets={"runtime.run_dir": runs, **overrides})
        train, vals = validation_sets(cfg, root, draw_root, cat, cfg.data.image_size)
        res = run_method("CFRG", cfg, train, vals["synth"], make_teacher(cfg), f"diag_{cat}", progress=False,
                         val_set=vals["draw"], track_every=every_epochs)
    name = "CFRG " + (", ".join(f"{k}={v}" for k, v in overrides.items()) or f"({cfg_name} profile)")
    rows = [dict(val="draw", category=cat, variant=name, step=p["step"], **{k: 100 * p[k] for k in METRICS}) for p in res["history"]["callback"]]
    rows.append(dict(val="synth", category=cat, variant=name, step=rows[-1]["step"], **{k: 100 * v for k, v in res["metrics"].items()}))
    log(f"{cat:14s} {name:30s} draw " + " ".join(f"{r['step']}:{r['p_auroc']:.1f}/{r['aupro']:.1f}" for r in rows[:-1]) +
        f" | synth {rows[-1]['p_auroc']:.1f}/{rows[-1]['aupro']:.1f}")
    return rows

METRICS = ("i_auroc", "p_auroc", "p_ap", "aupro", "pro_3cad")


def show_maps(cfg, root, draw_root, cat, steps, out, name):
    "Per-scale 1 - cos maps of the cpu RD (lr 5e-3) beside PaDiM's map, on defective and normal draw-validation images."
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    train, vals = validation_sets(cfg, root, draw_root, cat, BASE["size"])
    teacher = Teacher(cfg.teacher.name, True)
    ref = fit_padim(PaDiM(teacher, seed=cfg.runtime.seed, map_style=map_style(cfg)), train, 16)
    torch.manual_seed(cfg.runtime.seed)
    rd = ReverseDistillation(teacher, map_style=map_style(cfg), bottleneck_blocks=1, decoder_blocks=1)
    fit(rd, rd_step, train, epochs=math.ceil(steps / math.ceil(len(train) / 8)), batch_size=8, lr=5e-3, gamma=1.0, seed=cfg.runtime.seed, progress=False)
    rd.eval(); ds = vals["draw"]
    idx = [i for i, s in enumerate(ds.samples) if s.label][:3] + [i for i, s in enumerate(ds.samples) if not s.label][:2]
    fig, ax = plt.subplots(len(idx), 6, figsize=(12, 2.2 * len(idx)), squeeze=False)
    for r, i in enumerate(idx):
        with torch.no_grad(): it = ds[i]; o = rd(it["image"][None])
        per = [rd.map_style.upsample(cosine_distance(t, p), o["size"])[0, 0] for t, p in zip(o["t"], o["r"])]
        panels = [it["image"].permute(1, 2, 0), it["mask"][0], *[p.detach() for p in per], ref.predict(it["image"][None])[0][0]]
        for c, (img, title) in enumerate(zip(panels, ["image", "defect", "RD 1 - cos, 1/4", "RD 1/8", "RD 1/16", "PaDiM"])):
            ax[r, c].imshow(img, cmap=None if c == 0 else "jet"); ax[r, c].set_xticks([]); ax[r, c].set_yticks([])
            if r == 0: ax[r, c].set_title(title, fontsize=9)
            if c >= 2: ax[r, c].set_xlabel(f"{float(img.min()):.2f} .. {float(img.max()):.2f}", fontsize=7)
    fig.suptitle(f"{cat}, draw validation: each map on its own colour range (below it); RD {steps} steps", fontsize=9)
    plt.tight_layout(); save_figure(fig, out, f"{name}_maps_{cat}")


def plot_curves(curves, final, cats, out, name):
    "Mean validation P-AUROC and AUPRO of each variant against steps; PaDiM's references as horizontal lines."
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    metrics = ["p_auroc", "aupro"]
    kinds = list(curves.val.unique())
    fig, axes = plt.subplots(len(kinds), 2, figsize=(12, 3.8 * len(kinds)), squeeze=False)
    mean_curve = curves[curves.step > 0].groupby(["val", "variant", "step"], sort=False)[metrics].mean().reset_index()
    for row, kind in zip(axes, kinds):
        for ax, metric in zip(row, metrics):
            for variant, d in mean_curve[mean_curve.val == kind].groupby("variant", sort=False): ax.plot(d.step, d[metric], marker=".", label=variant)
            refs = [(v, r) for (k, v), r in final.iterrows() if k == kind and str(v).startswith("PaDiM")]
            for ls, (variant, r) in zip((":", "-.", "--", (0, (1, 3))), refs): ax.axhline(r[metric], color="k", ls=ls, label=variant)
            ax.set_xlabel("optimiser step"); ax.set_ylabel(f"{kind} validation {metric} (%)")
    axes[0, 0].legend(fontsize=6, ncol=2); fig.suptitle(f"RD variants on validation data ({', '.join(cats)})"); plt.tight_layout()
    save_figure(fig, out, f"{name}_curves")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu"); p.add_argument("--categories", nargs="*")
    p.add_argument("--steps", type=int, default=600); p.add_argument("--every", type=int, default=100)
    p.add_argument("--variants", nargs="*", help="names (prefixes) of VARIANTS to run; default all")
    p.add_argument("--threads", type=int, default=2); p.add_argument("--out", default="figures/diagnosis")
    p.add_argument("--draw-seed", type=int, default=1, help="seed of the second benchmark draw (validation); -1: none")
    p.add_argument("--name", default="distill_diagnosis", help="file name stem of the outputs")
    p.add_argument("--padim-sigmas", nargs="+", type=float, default=[4.0], help="blur sigmas PaDiM's reference maps are scored with")
    p.add_argument("--padim-sizes", nargs="+", type=int, default=[BASE["size"]], help="image sizes PaDiM's references are fitted at")
    p.add_argument("--replot", action="store_true", help="only redraw the curves figure from the CSV files in --out")
    p.add_argument("--cfrg", nargs="*", default=[], metavar="JSON", help='CFRG runs on the draw validation set, each a JSON dict of profile overrides (e.g. \'{"cfrg.lr": 0.005}\'; {} = the profile)')
    p.add_argument("--show-maps", nargs="*", default=[], metavar="CATEGORY", help="also draw RD's per-scale maps beside PaDiM's for these categories")
    a = p.parse_args(argv)
    if a.replot:
        curves, final = pd.read_csv(Path(a.out) / f"{a.name}_curves.csv"), pd.read_csv(Path(a.out) / f"{a.name}_final.csv").set_index(["val", "variant"])
        return plot_curves(curves, final, list(curves.category.unique()), Path(a.out), a.name)
    torch.set_num_threads(a.threads)
    cfg = load_profile(a.profile)
    root = benchmark_root(cfg)
    draw_root = None
    if a.draw_seed >= 0 and not cfg.data.root:
        from cad_nb.benchmark import make_3c_benchmark
        if a.draw_seed == cfg.runtime.seed: raise SystemExit("--draw-seed must differ from the profile's seed: that draw is the test benchmark")
        draw_root = make_3c_benchmark(cfg.path("runtime.cache_dir"), cfg.data.benchmark, a.draw_seed)
    cats = a.categories or list_categories(root)
    names = [n for n in VARIANTS if not a.variants or any(n.startswith(v) for v in a.variants)]
    out, curves, maps, padim, teachers, kinds = Path(a.out), [], [], [], {}, []
    out.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, flush=True)
    for cat in cats:
        teacher = teachers.setdefault(BASE["strides"], Teacher(cfg.teacher.name, True, strides=BASE["strides"]))
        for size in a.padim_sizes:
            train, vals = validation_sets(cfg, root, draw_root, cat, size)
            ref = fit_padim(PaDiM(teacher, seed=cfg.runtime.seed, map_style=map_style(cfg)), train, 16)
            for sigma in a.padim_sigmas:
                ref.map_style = MapStyle(sigma, cfg.maps.padding, bool(cfg.maps.align_corners))
                name = f"PaDiM (sigma {sigma:g})" + ("" if size == BASE["size"] else f", {size} px")
                padim += score_all(ref, vals, cfg, category=cat, variant=name)
                log(f"{cat:14s} {name} " + " ".join(f"{r['val']} {r['p_auroc']:.1f}/{r['aupro']:.1f}" for r in padim[-len(vals):]))
                if "draw" in vals and size == BASE["size"]: kinds += type_scores(ref, vals["draw"], category=cat, variant=name)
        for name in names:
            model, vals_v, rows = run_variant(name, VARIANTS[name], cfg, root, draw_root, cat, a.steps, a.every, teachers, log)
            curves += rows
            if "draw" in vals_v: kinds += type_scores(model, vals_v["draw"], category=cat, variant=name)
            if name.startswith("base"): maps += [r for kind, ds in vals_v.items() for r in map_variants(model, ds, cfg, cat, kind)]
        for overrides in a.cfrg: curves += run_cfrg(json.loads(overrides), a.profile, root, draw_root, cat, log)
        if cat in a.show_maps: show_maps(cfg, root, draw_root, cat, a.steps, out, a.name)
        pd.DataFrame(curves).to_csv(out / f"{a.name}_curves_partial.csv", index=False)
    metrics = ["p_auroc", "aupro", "p_ap", "i_auroc"]
    note = (f"Validation data only (synth: {cfg.data.val_images} held-out normal training images per category, every other with a "
            f"synthesised anomaly; draw: test split of benchmark seed {a.draw_seed}, 160 images); profile {cfg.name}, "
            f"categories {', '.join(cats)}; RD variants, {a.steps} steps; %.")
    curves, padim = pd.DataFrame(curves), pd.DataFrame(padim)
    save_table(curves.set_index(["val", "category", "variant", "step"])[metrics + ["params", "train_s"]], out, f"{a.name}_curves", ".1f", note)
    last = curves.loc[curves.groupby(["val", "category", "variant"]).step.idxmax()]
    best = curves.loc[curves.groupby(["val", "category", "variant"]).p_auroc.idxmax()]
    final = last.groupby(["val", "variant"], sort=False)[metrics + ["params", "train_s"]].mean()
    final["best P-AUROC step"] = best.groupby(["val", "variant"], sort=False).step.mean()
    for (kind, name), d in padim.groupby(["val", "variant"]): final.loc[(kind, name), metrics] = d[metrics].mean().values
    for kind in final.index.get_level_values(0).unique():
        for m in metrics: final.loc[kind, f"{m} - base"] = (final.loc[kind, m] - final.loc[(kind, "base (cpu before #16)"), m]).values if (kind, "base (cpu before #16)") in final.index else np.nan
    final = final.sort_index(level=0, sort_remaining=False)
    save_table(final, out, f"{a.name}_final", ".1f", note + " Mean over categories at the last step.")
    if kinds:
        k = pd.DataFrame(kinds).pivot_table(index="kind", columns="variant", values="p_auroc", aggfunc="mean", sort=False)
        save_table(k, out, f"{a.name}_kinds", ".1f", note + " P-AUROC of each defect kind on the draw validation set "
                   "(its pixels, single-kind images, against all normal pixels), mean over the categories that have it.")
    if maps:
        m = pd.DataFrame(maps).groupby(["val", "scales", "sigma"], sort=False)[metrics].mean()
        save_table(m, out, f"{a.name}_map", ".1f", note + " The trained base model's maps recombined (mean over categories).")
    plot_curves(curves, final, cats, out, a.name)
    print(final.round(1).to_string())


if __name__ == "__main__":
    main()
