"""Data at CAD 100K scale: `read_coco` on a synthetic COCO file of `--images` images (its wall time and the peak RSS
of the fresh process that reads it), and the multi-task loader's images/s with 2 workers against a CPU training step
of the cpu profile's multi-task model (random weights), so one sees whether the loader is the bottleneck.

    python tests/benchmarks/bench_coco_scale.py [--images 100000] [--out FILE] [--workdir DIR]

The data. Annotations are realistic: 7 categories (the car benchmark's classes, with its 7 domains), a quarter of the
images without annotations, the others with 1-3 instances (60/30/10 %), each a box and a polygon of 8-32 points
around it (area from the polygon). Pixels are not: a pool of 28 small JPEGs (4 per domain, sides 128-256, drawn by
the car benchmark's drawers) is written once and every image entry gets its own file name, a hard link to a pool file
(a copy where links are refused), with the pool file's height and width. So `read_coco(check_images=True)` stats and
opens one file per image and reads its header as on real data; only the page cache is warmer (28 inodes). The loader
decodes each JPEG and its polygons per item, as in training.

The measurements, in a fresh child process so its peak RSS (VmHWM, the high-water mark of resident memory, not
tracemalloc's Python-only figure) is that of the reader alone:
- read: `read_coco` wall time and peak RSS (and the RSS of the process before it: Python, NumPy, PIL, cad_nb.data);
- loader: images/s of the three task streams `task_datasets` builds, each an `infinite_loader` with `--workers`
  workers as `MultiTaskPlan` opens them, one batch per task in turn (the first batches, worker start-up, not timed);
- step: seconds per step of `train_multitask` (static weights, all three tasks, the cpu profile's batch size and lr,
  `profile_model(cfg, backbone, n, pretrained=False)`), once on batches held in memory (the compute alone) and once
  fed by the loader (`workers` per stream): the loader is the bottleneck when the fed step is clearly slower.
A benchmark, not a test: the figures depend on the machine and on what else runs on it (tests/test_coco_scale.py runs
it small and checks the fields, not the speed).
"""

import argparse, json, os, resource, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
from PIL import Image

POOL_PER_DOMAIN = 4
SIDES = (128, 256)
EMPTY_FRACTION = 0.25
INSTANCES = (1, 2, 3)
INSTANCE_P = (0.6, 0.3, 0.1)
POLYGON_POINTS = (8, 32)


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MB: Linux's VmHWM, which starts afresh at exec (ru_maxrss
    keeps the high-water mark of the process before the exec, here the parent that wrote the data)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_pool(folder: Path, seed=0) -> list[dict]:
    "The pool of small JPEGs, `POOL_PER_DOMAIN` per car domain; their file name, domain, height and width."
    from cad_nb.benchmark import CAR_DOMAINS, make_car_image

    folder.mkdir(parents=True, exist_ok=True)
    pool = []
    for d, domain in enumerate(CAR_DOMAINS):
        for k in range(POOL_PER_DOMAIN):
            img, _ = make_car_image(domain, np.random.default_rng([seed, d, k]), SIDES, defective=False)
            name = f"{domain}_{k}.jpg"
            Image.fromarray(img).save(folder / name, quality=90)
            pool.append(dict(name=name, domain=domain, height=img.shape[0], width=img.shape[1]))
    return pool


def polygon_annotation(rng, h, w, ann_id, image_id, category_id) -> dict:
    "One COCO annotation: a polygon of 8-32 points around a random centre, its xywh box and its area."
    radius = float(np.exp(rng.uniform(np.log(3), np.log(min(h, w) / 5))))
    cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(*POLYGON_POINTS, endpoint=True))))
    r = radius * rng.uniform(0.6, 1.0, angles.size)
    xs = np.clip(cx + r * np.cos(angles), 0, w - 1).round(1)
    ys = np.clip(cy + r * np.sin(angles), 0, h - 1).round(1)
    area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
    x0, y0 = float(xs.min()), float(ys.min())
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        bbox=[x0, y0, round(float(xs.max()) - x0, 1), round(float(ys.max()) - y0, 1)],
        area=round(area, 1),
        iscrowd=0,
        segmentation=[np.column_stack([xs, ys]).ravel().tolist()],
    )


def synthetic_coco(n_images: int, pool: list[dict], seed=0) -> dict:
    "A COCO dict of `n_images` images (each its own file name, a pool file's size) and their polygon annotations."
    from cad_nb.benchmark import CAR_CLASSES, CAR_DOMAINS

    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(n_images):
        p = pool[i % len(pool)]
        h, w = p["height"], p["width"]
        images.append(dict(id=i + 1, file_name=f"{i:06d}.jpg", height=h, width=w, domain=p["domain"]))
        if rng.random() < EMPTY_FRACTION:
            continue
        classes = CAR_DOMAINS[p["domain"]][1]
        for _ in range(int(rng.choice(INSTANCES, p=INSTANCE_P))):
            category_id = CAR_CLASSES.index(classes[int(rng.integers(len(classes)))]) + 1
            annotations.append(polygon_annotation(rng, h, w, len(annotations) + 1, i + 1, category_id))
    categories = [dict(id=k + 1, name=c, supercategory="defect") for k, c in enumerate(CAR_CLASSES)]
    return dict(images=images, annotations=annotations, categories=categories)


def link_images(coco: dict, pool: list[dict], pool_dir: Path, image_dir: Path):
    "Give every image entry its own file: a hard link to its pool file (a copy where the file system refuses links)."
    image_dir.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(coco["images"]):
        source, target = pool_dir / pool[i % len(pool)]["name"], image_dir / im["file_name"]
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)


def write_dataset(root: Path, n_images: int) -> tuple[Path, float]:
    "Write the synthetic COCO root (annotations/train.json, images/, pool/); the JSON's path and the seconds it took."
    t0 = time.perf_counter()
    pool = write_pool(root / "pool")
    coco = synthetic_coco(n_images, pool)
    link_images(coco, pool, root / "pool", root / "images")
    (root / "annotations").mkdir(exist_ok=True)
    json_path = root / "annotations" / "train.json"
    with open(json_path, "w") as f:
        json.dump(coco, f)
    return json_path, time.perf_counter() - t0


def loader_images_per_second(sets: dict, batch_size: int, workers: int, batches: int) -> dict:
    "Images/s of the task streams drawn in turn, after one untimed batch per stream (the workers' start-up)."
    from cad_nb.mtl import infinite_loader

    t0 = time.perf_counter()
    streams = {
        t: infinite_loader(ds, batch_size, seed=17 * k, workers=workers) for k, (t, ds) in enumerate(sets.items())
    }
    for stream in streams.values():
        next(stream)
    start_s = time.perf_counter() - t0
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        for stream in streams.values():
            n += len(next(stream)["image"])
    seconds = time.perf_counter() - t0
    return dict(workers=workers, batch_size=batch_size, images=n, images_per_s=n / seconds, start_s=start_s)


def step_seconds(model, cfg, sets: dict, steps: int, workers: int) -> float:
    "Median seconds per step of `train_multitask` on `sets` (steps after the first two: start-up, first allocations)."
    from cad_nb.mtl import train_multitask

    history = train_multitask(
        model,
        sets,
        weighting="static",
        steps=steps,
        batch_size=cfg.mtl.batch_size,
        lr=cfg.mtl.lr,
        workers=workers,
        progress=False,
    )["history"]
    return statistics.median(row["step_time"] for row in history[2:])


def measure(json_path: Path, profile: str, image_size, workers: int, batches: int, steps: int) -> dict:
    "The child's measurements: read_coco (seconds, peak RSS), the loader's images/s, the step with and without it."
    from cad_nb.data import read_coco

    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    coco_set = read_coco(json_path)
    read = dict(seconds=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb(), rss_before_mb=rss_before)
    read.update(images=len(coco_set.samples), annotations=sum(len(s.classes) for s in coco_set.samples))

    import torch
    from cad_nb.mtl import profile_model, task_datasets
    from cad_nb.settings import load_profile

    cfg = load_profile(profile, sets={"mtl.image_size": image_size})
    if cfg.mtl.threads:
        torch.set_num_threads(cfg.mtl.threads)
    S, B = cfg.mtl.image_size, cfg.mtl.batch_size
    sets = task_datasets(coco_set, S)
    loader = dict(image_size=S, **loader_images_per_second(sets, B, workers, batches))
    held = {t: [ds[i] for i in range(B)] for t, ds in sets.items()}  # a list of items is a map-style dataset
    torch.manual_seed(0)
    model = profile_model(cfg, cfg.mtl.backbones[0], len(coco_set.class_names) - 1, pretrained=False)
    step = dict(
        profile=profile,
        backbone=cfg.mtl.backbones[0],
        image_size=S,
        batch_size=B,
        tasks=len(sets),
        threads=torch.get_num_threads(),
        steps=steps,
        compute_s=step_seconds(model, cfg, held, steps, workers=0),
        fed_s=step_seconds(model, cfg, sets, steps, workers=workers),
    )
    step["loader_s"] = step["tasks"] * B / loader["images_per_s"]  # the loader's time for one step's images
    return dict(read=read, loader=loader, step=step)


def table(r: dict) -> str:
    "The short table the benchmark prints."
    read, loader, step = r["read"], r["loader"], r["step"]
    rows = [
        ("images / annotations", f"{read['images']:,} / {read['annotations']:,}", f"JSON {r['json_mb']:.0f} MB"),
        ("read_coco wall time", f"{read['seconds']:.1f} s", "check_images=True: a header per image"),
        ("read_coco peak RSS", f"{read['peak_rss_mb']:.0f} MB", f"{read['rss_before_mb']:.0f} MB before the read"),
        (
            "loader",
            f"{loader['images_per_s']:.0f} images/s",
            f"{loader['workers']} workers/stream, {loader['image_size']} px",
        ),
        ("loader time per step", f"{step['loader_s']:.2f} s", f"{step['tasks']} tasks x batch {step['batch_size']}"),
        ("training step, compute", f"{step['compute_s']:.2f} s", f"{step['backbone']}, {step['threads']} threads"),
        ("training step, fed by loader", f"{step['fed_s']:.2f} s", f"median of {step['steps'] - 2} steps"),
    ]
    return "\n".join(f"{a:<30} {b:>18}   {c}" for a, b, c in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000, help="images in the synthetic COCO file")
    ap.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the data (default: a temporary folder)")
    ap.add_argument("--profile", default="cpu", help="settings profile of the model, image size and batch")
    ap.add_argument("--image-size", default=None, help="training image size (default: the profile's mtl.image_size)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers per task stream")
    ap.add_argument("--batches", type=int, default=20, help="timed loader batches per task stream")
    ap.add_argument("--steps", type=int, default=12, help="training steps per step measurement (first 2 untimed)")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # the child's entry
    a = ap.parse_args()
    if a.images < 1 or a.steps < 3 or a.batches < 1:
        ap.error("--images and --batches must be at least 1, --steps at least 3")
    if a.measure is not None:
        print(json.dumps(measure(a.measure, a.profile, a.image_size, a.workers, a.batches, a.steps)))
        return
    root = Path(tempfile.mkdtemp(prefix="coco_scale_")) if a.workdir is None else a.workdir
    try:
        json_path, write_s = write_dataset(root, a.images)
        child = [sys.executable, __file__, "--measure", str(json_path), "--profile", a.profile]
        child += [] if a.image_size is None else ["--image-size", a.image_size]
        child += ["--workers", str(a.workers), "--batches", str(a.batches), "--steps", str(a.steps)]
        done = subprocess.run(child, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"the measuring process failed:\n{done.stderr[-3000:]}")
        results = dict(json.loads(done.stdout.splitlines()[-1]), write_s=write_s)
        results.update(json_mb=json_path.stat().st_size / 2**20, cpus=os.cpu_count(), load_average=os.getloadavg())
    finally:
        if a.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(table(results))
    if a.out is not None:
        a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
