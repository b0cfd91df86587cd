"""The Python behind the prepared GPU check (`bash tests/benchmarks/gpu_check.sh`).

Why it exists: the development machines and CI have no GPU, and a session lent one (one H200, minutes of device time)
has no time to write code. So this script is prepared, and kept working by `tests/test_gpu_check.py`, which runs it on
the CPU at tiny sizes (`--dry-run`). The shell script calls one stage per process, each inside `timeout`:

    python tests/benchmarks/gpu_check.py --stage pytest     --out OUT [--dry-run]   # the CUDA-guarded tests
    python tests/benchmarks/gpu_check.py --stage throughput --out OUT [--dry-run]   # training images/s, fp32 and bf16
    python tests/benchmarks/gpu_check.py --stage metrics    --out OUT [--dry-run]   # fp32 vs bf16 metrics of one run
    python tests/benchmarks/gpu_check.py --stage report     --out OUT               # OUT/gpu_check.{json,md}

Each stage writes OUT/parts/STAGE.json (the throughput stage after every row, so a stage stopped by its time box
keeps what it measured); `report` merges them with OUT/parts/stages.tsv (the shell's per-stage exit codes and
seconds). Models are built with explicit sizes (the paper's, or tiny ones for the dry run), never from settings.ini.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

try:  # every cad_nb name this check uses: a refactor that moves one needs a change here only
    from cad_nb import __version__ as CAD_NB_VERSION
    from cad_nb.baselines import ReverseDistillation, rd_step
    from cad_nb.cfrg import CFRG, CFRGLoss, cfrg_step
    from cad_nb.components import MapStyle
    from cad_nb.coba import EqualWeights
    from cad_nb.core import git_commit, seed_everything
    from cad_nb.weights import package_weights
    from cad_nb.data import AnomalyDataset, collate_multitask, read_category, read_coco
    from cad_nb.destseg import DeSTSeg, destseg_optimizers, segmentation_step, set_phase, student_step
    from cad_nb.metrics import evaluate as evaluate_maps
    from cad_nb.mtl import TASK_LOSSES, TASKS, MultiTaskModel, task_datasets
    from cad_nb.synthesis import AnomalySynthesizer, SynthesisDataset
    from cad_nb.benchmark import make_3c_benchmark, make_car_benchmark
    from cad_nb.train import make_optimizer, predict
    IMPORT_ERROR = None
except ImportError as e:  # the report stage still runs and names the failure
    IMPORT_ERROR = f"cad_nb import failed: {type(e).__name__}: {e}"

REPO = Path(__file__).resolve().parents[2]
STAGES = ("pytest", "throughput", "metrics")
PRECISIONS = ("fp32", "bf16")
METRIC_KEYS = ("i_auroc", "p_auroc", "p_ap", "aupro", "pro_3cad")
SEED = 0


@dataclass(frozen=True)
class Sizes:
    "Every size the check uses: the GPU run's (`GPU`) and the CPU dry run's (`DRY`)."
    image: int
    batch: int
    warmup: int
    steps: int
    compute_steps: int
    workers: int
    head_width: int
    bottleneck_blocks: int
    decoder_blocks: tuple
    seg_width: int
    mtl_image: int
    mtl_batch: int
    vit_depth: int | None
    metric_image: int
    metric_batch: int
    metric_steps: int
    metric_head: int
    metric_lr: float
    job_seconds: int
    pytest_seconds: int


GPU = Sizes(image=256, batch=32, warmup=3, steps=30, compute_steps=8, workers=8, head_width=128, bottleneck_blocks=3,
            decoder_blocks=(3, 4, 6), seg_width=256, mtl_image=224, mtl_batch=32, vit_depth=None, metric_image=128,
            metric_batch=8, metric_steps=100, metric_head=32, metric_lr=2e-3, job_seconds=60, pytest_seconds=50)
DRY = Sizes(image=64, batch=2, warmup=1, steps=2, compute_steps=1, workers=1, head_width=16, bottleneck_blocks=1,
            decoder_blocks=(1, 1, 1), seg_width=32, mtl_image=64, mtl_batch=2, vit_depth=2, metric_image=64,
            metric_batch=2, metric_steps=2, metric_head=16, metric_lr=2e-3, job_seconds=180, pytest_seconds=170)


# ---------------------------------------------------------------------------------------------------- helpers
def need_cad_nb():
    "Stop a stage that needs cad_nb when its import failed."
    if IMPORT_ERROR: raise RuntimeError(IMPORT_ERROR)


def short_error(e: BaseException) -> str:
    "One line naming an exception: its type and the start of its message."
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def write_json(path: Path, data):
    "Write `data` as indented JSON (NaN as null) atomically."
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(clean(data), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def clean(value):
    "JSON-safe copy of `value`: NaN/inf as None, tuples as lists, numpy scalars as floats."
    if isinstance(value, dict): return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)): return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)): value = value.item()
    if isinstance(value, float) and not math.isfinite(value): return None
    return value


class StageTimeout(Exception):
    "A job ran past its own time box."


@contextlib.contextmanager
def time_box(seconds: int):
    "Raise StageTimeout in the main thread after `seconds` (SIGALRM); no-op where there is no SIGALRM."
    if not hasattr(signal, "SIGALRM") or seconds <= 0:
        yield
        return
    def alarm(signum, frame): raise StageTimeout(f"ran past its time box of {seconds} s")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try: yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def pick_device(dry_run: bool) -> torch.device:
    "CPU for the dry run, else CUDA (a clear error without it)."
    if dry_run: return torch.device("cpu")
    if not torch.cuda.is_available(): raise SystemExit("gpu_check: no CUDA device (pass --dry-run to run on the CPU)")
    return torch.device("cuda")


def precision_context(device: torch.device, precision: str):
    "torch.autocast to bfloat16 on `runtime.device` for 'bf16' (CPU autocast in the dry run), nothing for 'fp32'."
    if precision == "fp32": return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device):
    "Wait for queued GPU work (no-op on the CPU)."
    if device.type == "cuda": torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    "Peak GPU memory allocated since the last reset, GiB (None on the CPU)."
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def reset_peak(device: torch.device):
    "Free what the last job left, give cached blocks back and start a new peak-memory window."
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def trainable(model) -> int:
    "Number of parameters that require a gradient."
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def smoke_root(cache: Path) -> Path:
    "The smoke embedded 3CAD-layout benchmark (generated once into `cache`)."
    return make_3c_benchmark(cache, "smoke", SEED)


def train_samples(cache: Path) -> list:
    "The training images of every category of the smoke benchmark."
    root = smoke_root(cache)
    return [s for c in sorted(p.name for p in root.iterdir() if p.is_dir()) for s in read_category(root, c)
            if s.split == "train"]


def repeat(items: list, n: int) -> list:
    "`items` cycled to length `n`."
    return [items[i % len(items)] for i in range(n)]


def loader(dataset, batch: int, workers: int, collate=None):
    "A shuffled, seeded DataLoader of full batches, as training builds them (pinned memory on CUDA)."
    from torch.utils.data import DataLoader
    return DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                      generator=torch.Generator().manual_seed(SEED), pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0, collate_fn=collate)


# ---------------------------------------------------------------------------------------------------- stage a
def cuda_test_files() -> list[Path]:
    "The test files that mention CUDA (this check's own test excluded)."
    files = sorted((REPO / "tests").glob("test_*.py"))
    return [f for f in files if f.name != "test_gpu_check.py" and re.search(r"cuda", f.read_text(errors="ignore"))]


def junit_counts(xml_path: Path) -> dict:
    "passed/failed/errors/skipped counts and per-test outcomes from a pytest JUnit XML file."
    root = ET.parse(xml_path).getroot()
    cases = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = {"failure": "failed"}.get(child.tag, child.tag), child.get("message", "")
        cases.append(dict(test=f"{case.get('classname')}::{case.get('name')}", outcome=outcome, message=message[:300]))
    count = lambda o: sum(c["outcome"] == o for c in cases)
    return dict(collected=len(cases), passed=count("passed"), failed=count("failed"), errors=count("error"),
                skipped=count("skipped"), tests=cases)


def stage_pytest(args, sizes: Sizes) -> dict:
    "Run the CUDA-guarded tests (`-k 'cuda or gpu'` over the files that mention CUDA); their counts."
    files = cuda_test_files()
    if not files: raise RuntimeError("no test file under tests/ mentions cuda")
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda or gpu", "-rs",
               f"--junitxml={xml}", *[str(f.relative_to(REPO)) for f in files]]
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=sizes.pytest_seconds)
        print(run.stdout[-4000:], run.stderr[-2000:], sep="\n")
        if run.returncode not in (0, 1) or not xml.is_file():
            raise RuntimeError(f"pytest exited {run.returncode}: {(run.stdout + run.stderr).strip()[-300:]}")
        counts = junit_counts(xml)
    shown = ["python", *[c for c in cmd[1:] if not c.startswith("--junitxml")]]
    return dict(command=shlex.join(shown), exit_code=run.returncode,
                files=[f.relative_to(REPO).as_posix() for f in files], cuda_available=torch.cuda.is_available(),
                **counts)


# ---------------------------------------------------------------------------------------------------- stage b
@dataclass
class Job:
    "One throughput row: how to build its model, optimiser, data and training step."
    name: str
    config: str
    build: Callable
    optimizer: Callable
    step: Callable
    batches: Callable
    images_per_step: int
    channels_last: bool = True
    params: dict = field(default_factory=dict)


def adam(model):
    "The Adam optimiser of `cad_nb.train.fit` (CFRG, RD)."
    return make_optimizer(model, lr=5e-4, epochs=50)[0]


def synthesis_batches(cache: Path, sizes: Sizes, n_images: int):
    "Batches of training images with the training-time synthesis (SynthesisDataset), as CFRG and DeSTSeg train."
    data = AnomalyDataset(repeat(train_samples(cache), n_images), sizes.image)
    return iter(loader(SynthesisDataset(data, AnomalySynthesizer(), seed=SEED), sizes.batch, sizes.workers))


def plain_batches(cache: Path, sizes: Sizes, n_images: int):
    "Batches of normal training images, as RD trains."
    data = AnomalyDataset(repeat(train_samples(cache), n_images), sizes.image)
    return iter(loader(data, sizes.batch, sizes.workers))


def coco_train(cache: Path):
    "The training split of the smoke embedded car multi-task benchmark."
    return read_coco(make_car_benchmark(cache, "smoke", SEED) / "annotations" / "train.json")


def mtl_batches(cache: Path, sizes: Sizes, n_images: int):
    "Endless {task: batch} dicts from one DataLoader per task stream (`task_datasets`), as train_multitask draws."
    from torch.utils.data import ConcatDataset
    streams = task_datasets(coco_train(cache), sizes.mtl_image)
    workers = max(1, sizes.workers // len(TASKS)) if sizes.workers else 0
    iters = {}
    for t in TASKS:
        ds = ConcatDataset([streams[t]] * max(1, math.ceil(n_images / len(TASKS) / len(streams[t]))))
        iters[t] = iter(loader(ds, sizes.mtl_batch, workers, collate_multitask))
    while True: yield {t: next(it) for t, it in iters.items()}


def mtl_step(model, batches: dict, device) -> dict:
    "One multi-task step's loss: every task's batch through one backbone pass, equal static weights."
    out = model({t: b["image"].to(device, non_blocking=True) for t, b in batches.items()})
    losses = {TASKS.index(t): TASK_LOSSES[t](out[t], b) for t, b in batches.items()}
    return dict(loss=EqualWeights(len(TASKS)).loss(losses))


def cfrg_job(teacher: str, sizes: Sizes, cache: Path) -> Job:
    "CFRG at `sizes` (the paper's: head 128, bottleneck 3, decoder 3-4-6, student efficientnet_b0) on `teacher`."
    params = dict(teacher=teacher, student="efficientnet_b0", head_width=sizes.head_width,
                  bottleneck_blocks=sizes.bottleneck_blocks, decoder_blocks=sizes.decoder_blocks)
    build = lambda: CFRG(pretrained=False, map_style=MapStyle(), **params)
    criterion = CFRGLoss()
    step = lambda m, b, d: cfrg_step(m, b, d, criterion)
    return Job("CFRG", f"teacher {teacher}", build, adam, step, lambda n: synthesis_batches(cache, sizes, n),
               sizes.batch, params=params)


def rd_job(sizes: Sizes, cache: Path) -> Job:
    "Reverse Distillation (RD4AD) at `sizes` on wide_resnet50_2."
    params = dict(teacher="wide_resnet50_2", bottleneck_blocks=sizes.bottleneck_blocks,
                  decoder_blocks=sizes.decoder_blocks)
    build = lambda: ReverseDistillation(pretrained=False, **params)
    return Job("RD", "teacher wide_resnet50_2", build, adam, rd_step, lambda n: plain_batches(cache, sizes, n),
               sizes.batch, params=params)


def destseg_job(phase: int, sizes: Sizes, cache: Path) -> Job:
    "DeSTSeg (resnet18 teacher and student, `seg_width`) in training phase 1 (student) or 2 (segmentation net)."
    params = dict(teacher="resnet18", student_encoder="resnet18", seg_width=sizes.seg_width)
    build = lambda: DeSTSeg(pretrained=False, **params)
    optimizer = lambda m: destseg_optimizers(m)[phase - 1]
    phase_step = student_step if phase == 1 else segmentation_step
    step = lambda m, b, d: phase_step(set_phase(m, phase), b, d)                # precision: the outer autocast
    what = "phase 1 (student)" if phase == 1 else "phase 2 (segmentation)"
    return Job("DeSTSeg", what, build, optimizer, step, lambda n: synthesis_batches(cache, sizes, n), sizes.batch,
               channels_last=False, params=dict(params, phase=phase))


def mtl_job(backbone: str, sizes: Sizes, cache: Path) -> Job:
    "One multi-task step (cls + det + seg batches) of MultiTaskModel on `backbone` at `mtl_image` px."
    vit = backbone.startswith("vit")
    kwargs = dict(depth=sizes.vit_depth) if vit and sizes.vit_depth else {}
    params = dict(backbone=backbone, image_size=sizes.mtl_image, batch_per_task=sizes.mtl_batch, **kwargs)
    build = lambda: MultiTaskModel(backbone, n_classes=len(coco_train(cache).class_names) - 1, pretrained=False,
                                   image_size=sizes.mtl_image, **kwargs)
    optimizer = lambda m: torch.optim.AdamW(m.parameters(), lr=3e-4, weight_decay=1e-4)
    return Job("MultiTask", f"backbone {backbone}", build, optimizer, mtl_step,
               lambda n: mtl_batches(cache, sizes, n), sizes.mtl_batch * len(TASKS), channels_last=False,
               params=params)


def throughput_jobs(sizes: Sizes, cache: Path) -> list[Job]:
    "The rows of the throughput table, most important first (a stage short of time drops the last)."
    return [cfrg_job("tf_efficientnet_lite0", sizes, cache), cfrg_job("wide_resnet50_2", sizes, cache),
            rd_job(sizes, cache), destseg_job(2, sizes, cache), destseg_job(1, sizes, cache),
            mtl_job("convnext_tiny", sizes, cache), mtl_job("vit_small_patch16_dinov3", sizes, cache)]


def train_step(job: Job, model, opt, batch, device, precision: str) -> torch.Tensor:
    "One optimisation step of `job` under `precision`; the detached loss."
    with precision_context(device, precision): losses = job.step(model, batch, device)
    opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    opt.step()
    return losses["loss"].detach()


def compute_rate(job: Job, model, opt, batch, device, precision: str, sizes: Sizes) -> dict:
    "Images/s of the model step alone, on one batch already loaded (no data pipeline)."
    for _ in range(sizes.warmup): train_step(job, model, opt, batch, device, precision)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(sizes.compute_steps): loss = train_step(job, model, opt, batch, device, precision)
    synchronize(device)
    seconds = time.perf_counter() - t0
    return dict(compute_images_per_s=sizes.compute_steps * job.images_per_step / seconds,
                compute_step_ms=1000 * seconds / sizes.compute_steps, compute_loss=float(loss))


def steady_window(stamps: list, waits: list) -> int:
    "Index of the first timed step that waited for data (the prefetched batches used up), 0 if none did."
    for i, w in enumerate(waits[:-3]):
        if w > 2e-3: return i
    return 0


def pipeline_rate(job: Job, model, opt, batches, device, precision: str, sizes: Sizes) -> dict:
    "Images/s of training with the DataLoader, in steady state (from the first step that waited for data)."
    for _ in range(sizes.warmup): train_step(job, model, opt, next(batches), device, precision)
    synchronize(device)
    start, stamps, waits = time.perf_counter(), [], []
    for _ in range(sizes.steps):
        t = time.perf_counter()
        batch = next(batches)
        waits.append(time.perf_counter() - t)
        loss = train_step(job, model, opt, batch, device, precision)
        stamps.append(time.perf_counter())
    synchronize(device)
    stamps[-1] = time.perf_counter()
    k = steady_window(stamps, waits)
    t0 = start if k == 0 else stamps[k - 1]
    seconds, n = stamps[-1] - t0, sizes.steps - k
    return dict(images_per_s=n * job.images_per_step / seconds, step_ms=1000 * seconds / n,
                data_wait_share=sum(waits[k:]) / seconds, steady_from_step=k, loss=float(loss))


def run_job(job: Job, device, sizes: Sizes, rows: list):
    "Both precisions of one throughput row, appended to `rows`: compute-only and DataLoader images/s, memory, loss."
    seed_everything(SEED)
    model = job.build().to(device).train()
    if job.channels_last and device.type == "cuda": model = model.to(memory_format=torch.channels_last)
    opt = job.optimizer(model)
    per_precision = sizes.warmup + sizes.steps + 1
    batches = job.batches(len(PRECISIONS) * per_precision * job.images_per_step)
    fixed = next(batches)
    for precision in PRECISIONS:
        reset_peak(device)
        t0 = time.perf_counter()
        row = dict(model=job.name, config=job.config, precision=precision, params=job.params,
                   trainable_params=trainable(model), images_per_step=job.images_per_step)
        row.update(compute_rate(job, model, opt, fixed, device, precision, sizes))
        row.update(pipeline_rate(job, model, opt, batches, device, precision, sizes))
        row.update(peak_gib=peak_gib(device), seconds=time.perf_counter() - t0)
        if not math.isfinite(row["loss"]): raise FloatingPointError(f"{precision}: loss is {row['loss']}")
        rows.append(row)
        print(f"  {job.name} {job.config} {precision}: {row['images_per_s']:.1f} img/s with the DataLoader, "
              f"{row['compute_images_per_s']:.1f} img/s compute only", flush=True)


def stage_throughput(args, sizes: Sizes, device, part: Path) -> dict:
    "Training images/s of every job in fp32 and bf16; written to `part` after each job."
    need_cad_nb()
    result = dict(image_size=sizes.image, batch=sizes.batch, warmup=sizes.warmup, steps=sizes.steps,
                  compute_steps=sizes.compute_steps, workers=sizes.workers, rows=[], errors=[],
                  data="smoke embedded benchmark: 80-144 px PNGs of every category, resized to image_size "
                       "(real 3CAD images are larger: decoding costs ~3 ms more per image)")
    started = time.perf_counter()
    for job in throughput_jobs(sizes, args.cache):
        label = f"{job.name} {job.config}"
        left = args.budget - (time.perf_counter() - started)
        if left < 10:
            result["errors"].append(dict(job=label, error="skipped: the stage's time budget was spent"))
            continue
        t0 = time.perf_counter()
        try:
            with time_box(int(min(sizes.job_seconds, left))): run_job(job, device, sizes, result["rows"])
        except Exception as e:
            traceback.print_exc()
            result["errors"].append(dict(job=label, error=short_error(e)))
        print(f"  {label}: {time.perf_counter() - t0:.1f} s", flush=True)
        reset_peak(device)
        write_json(part, dict(stage="throughput", status="running", result=result))
    return result


# ---------------------------------------------------------------------------------------------------- stage c
def lite0_weights():
    "The ImageNet weights file of tf_efficientnet_lite0 from its installed package, or None (random teacher)."
    found = package_weights("tf_efficientnet_lite0")
    return str(found[0]) if found else None


def small_cfrg(sizes: Sizes, weights) -> CFRG:
    "A small CFRG (the cpu profile's shape) on tf_efficientnet_lite0, its map blur scaled to the image size."
    style = MapStyle(sigma=4.0 * sizes.metric_image / 256)
    return CFRG(teacher="tf_efficientnet_lite0", student="efficientnet_b0", pretrained=weights is not None,
                teacher_weights=weights, head_width=sizes.metric_head, bottleneck_blocks=1, decoder_blocks=1,
                map_style=style)


def train_and_score(train, test, sizes: Sizes, device, precision: str, weights) -> dict:
    "Train the small CFRG for `metric_steps` under `precision` from seed 0, score the test set under it too."
    seed_everything(SEED)
    model = small_cfrg(sizes, weights).to(device).train()
    if device.type == "cuda": model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, lr=sizes.metric_lr, epochs=1)[0]
    data = AnomalyDataset(repeat(train, sizes.metric_steps * sizes.metric_batch), sizes.metric_image)
    job = Job("CFRG", "metrics", None, None, cfrg_step, None, sizes.metric_batch)
    t0, losses = time.perf_counter(), []
    for batch in loader(SynthesisDataset(data, AnomalySynthesizer(), seed=SEED), sizes.metric_batch, 0):
        losses.append(float(train_step(job, model, opt, batch, device, precision)))
    test_set = AnomalyDataset(test, sizes.metric_image, mask_resize="any-overlap")
    with precision_context(device, precision):
        pred = predict(model, test_set, batch_size=16, device=device, workers=0, amp=False)
    metrics = evaluate_maps(pred["masks"], pred["maps"], pred["scores"], on_undefined="nan", labels=pred["labels"])
    return dict(metrics=metrics, first_loss=losses[0], last_loss=losses[-1], steps=len(losses),
                teacher_weights=model.teacher.weights, seconds=time.perf_counter() - t0, scores=pred["scores"])


def stage_metrics(args, sizes: Sizes, device) -> dict:
    "fp32 and bf16 runs of the same seeded training on one smoke category; both metric sets and bf16 - fp32."
    need_cad_nb()
    samples = read_category(smoke_root(args.cache), args.category)
    train = [s for s in samples if s.split == "train"]
    test = [s for s in samples if s.split == "test"]
    weights = lite0_weights()
    runs = {p: train_and_score(train, test, sizes, device, p, weights) for p in PRECISIONS}
    a, b = (runs[p]["metrics"] for p in PRECISIONS)
    fp32_scores, bf16_scores = (runs[p].pop("scores") for p in PRECISIONS)
    return dict(category=args.category, image_size=sizes.metric_image, batch=sizes.metric_batch,
                steps=sizes.metric_steps, lr=sizes.metric_lr, n_train=len(train), n_test=len(test),
                model=dict(teacher="tf_efficientnet_lite0", student="efficientnet_b0", head_width=sizes.metric_head,
                           bottleneck_blocks=1, decoder_blocks=1),
                runs=runs, diff={k: b[k] - a[k] for k in METRIC_KEYS},
                max_abs_score_diff=float(abs(bf16_scores - fp32_scores).max()))


# ---------------------------------------------------------------------------------------------------- stage d
def environment(args) -> dict:
    "Device, versions and the command line, for the report."
    import timm
    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    return dict(device=torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)",
                gpu_memory_gib=props.total_memory / 2 ** 30 if props else None,
                multiprocessors=props.multi_processor_count if props else None, cpu_count=os.cpu_count(),
                dry_run=args.dry_run, command=os.environ.get("GPU_CHECK_COMMAND", " ".join(sys.argv)),
                python=platform.python_version(), torch=torch.__version__, timm=timm.__version__,
                cad_nb=None if IMPORT_ERROR else CAD_NB_VERSION, cad_nb_import_error=IMPORT_ERROR,
                git=None if IMPORT_ERROR else git_commit(REPO), cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if cuda else None,
                matmul_tf32=torch.backends.cuda.matmul.allow_tf32, cudnn_tf32=torch.backends.cudnn.allow_tf32,
                cudnn_benchmark=torch.backends.cudnn.benchmark, hostname=platform.node(),
                date=time.strftime("%Y-%m-%d %H:%M:%S %z"))


def shell_stages(parts: Path) -> dict:
    "The shell's record of each stage: {name: (exit code, seconds, time box)}."
    path, found = parts / "stages.tsv", {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, rc, seconds, limit = (line.split("\t") + ["", "", "", ""])[:4]
            found[name] = dict(rc=int(rc) if rc.lstrip("-").isdigit() else None,
                               seconds=float(seconds) if seconds else None, limit=limit)
    return found


def stage_status(part: dict | None, shell: dict) -> dict:
    "Status of one stage from its part file and the shell's exit code: ok, error, timed out or missing."
    rc = shell.get("rc")
    entry = dict(seconds=shell.get("seconds"), rc=rc, time_box_s=shell.get("limit"))
    if rc in (124, 137): entry.update(status="timed out", error=f"killed by its time box ({shell.get('limit')} s)")
    elif part is None: entry.update(status="missing", error="the stage wrote no result (see gpu_check.log)")
    else: entry.update(status=part.get("status", "error"), error=part.get("error"))
    return entry


def install_status(shell: dict) -> dict:
    "The install stage's entry, from the shell's exit code alone."
    rc = shell.get("rc")
    error = None if rc == 0 else f"exit {rc}: see gpu_check.log"
    return dict(status="ok" if rc == 0 else "error", error=error, seconds=shell.get("seconds"), rc=rc,
                time_box_s=shell.get("limit"), result=None)


def collect(args) -> dict:
    "The whole report: environment, every stage's status, seconds and numbers."
    parts, shell = args.out / "parts", shell_stages(args.out / "parts")
    report = dict(environment=environment(args), stages=dict(install=install_status(shell.get("install", {}))))
    for name in STAGES:
        path = parts / f"{name}.json"
        part = json.loads(path.read_text()) if path.is_file() else None
        report["stages"][name] = dict(stage_status(part, shell.get(name, {})),
                                      result=(part or {}).get("result"))
    report["total_seconds"] = sum(s.get("seconds") or 0 for s in shell.values())
    report["ok"] = all(s["status"] == "ok" for s in report["stages"].values())
    return report


def fmt(value, digits=1) -> str:
    "A table cell: numbers rounded, None as a dash."
    if value is None: return "–"
    if isinstance(value, float): return f"{value:.{digits}f}"
    return str(value)


def md_table(header: list, rows: list) -> list[str]:
    "A Markdown table's lines."
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]


def md_throughput(result: dict) -> list[str]:
    "The throughput section: one line per model and precision, then the jobs that failed."
    rows = [[r["model"], r["config"], r["precision"], fmt(r["images_per_s"]), fmt(r["compute_images_per_s"]),
             fmt(r["step_ms"]), fmt(100 * r["data_wait_share"], 0), fmt(r["peak_gib"], 2),
             f"{r['trainable_params'] / 1e6:.1f}", fmt(r["loss"], 4)] for r in result["rows"]]
    head = ["model", "config", "precision", "img/s (DataLoader)", "img/s (compute only)", "step ms", "data wait %",
            "peak GiB", "trained M params", "loss"]
    lines = [f"Image size {result['image_size']} px (multi-task: its own size), batch {result['batch']} (multi-task: "
             f"per task, three tasks a step). Steps: {result['warmup']} warm-up, then {result['compute_steps']} timed "
             f"on one loaded batch (compute only) and {result['steps']} timed with the DataLoader "
             f"({result['workers']} workers; multi-task: a third of them per task), counted from the first step "
             f"that waited for data. Data: {result['data']}.", ""]
    lines += md_table(head, rows)
    return lines + [f"- {e['job']}: {e['error']}" for e in result["errors"]]


def md_metrics(result: dict) -> list[str]:
    "The fp32/bf16 metrics section."
    fp32, bf16 = (result["runs"][p] for p in PRECISIONS)
    rows = [[k, fmt(fp32["metrics"][k], 4), fmt(bf16["metrics"][k], 4), fmt(result["diff"][k], 4)]
            for k in METRIC_KEYS]
    rows += [["last training loss", fmt(fp32["last_loss"], 4), fmt(bf16["last_loss"], 4),
              fmt(bf16["last_loss"] - fp32["last_loss"], 4)]]
    lines = [f"CFRG (small) on {result['category']} of the smoke benchmark, {result['steps']} steps of batch "
             f"{result['batch']} at {result['image_size']} px, seed {SEED}; teacher: {fp32['teacher_weights']}. "
             f"Largest image-score difference: {result['max_abs_score_diff']:.4g}.", ""]
    return lines + md_table(["metric", "fp32", "bf16", "bf16 - fp32"], rows)


def md_pytest(result: dict) -> list[str]:
    "The pytest section: counts, then each test's outcome."
    lines = [f"`{result['command']}` (CUDA available: {result['cuda_available']})", ""]
    lines += md_table(["collected", "passed", "failed", "errors", "skipped"],
                      [[result[k] for k in ("collected", "passed", "failed", "errors", "skipped")]])
    return lines + [""] + [f"- {t['outcome']}: {t['test']} {t['message']}".rstrip() for t in result["tests"]]


def markdown(report: dict) -> str:
    "The report as Markdown: environment, stages, then each stage's tables."
    env = report["environment"]
    lines = ["# cad_nb GPU check" + (" (dry run on the CPU)" if env["dry_run"] else ""), "",
             f"{env['device']}; torch {env['torch']} (CUDA {env['cuda']}), timm {env['timm']}, cad_nb {env['cad_nb']} "
             f"({env['git']}), Python {env['python']}; TF32 matmul {env['matmul_tf32']}, TF32 cuDNN "
             f"{env['cudnn_tf32']}, cudnn.benchmark {env['cudnn_benchmark']}. {env['date']}.", "",
             f"Command: `{env['command']}`", "", "## Stages", ""]
    rows = [[n, s["status"], fmt(s["seconds"]), s["time_box_s"] or "–", s["error"] or ""]
            for n, s in report["stages"].items()]
    lines += md_table(["stage", "status", "seconds", "time box s", "error"], rows)
    lines += ["", f"Total: {report['total_seconds']:.0f} s (stages as the shell timed them)."]
    sections = dict(pytest=("CUDA tests", md_pytest), throughput=("Training throughput", md_throughput),
                    metrics=("fp32 vs bf16 metrics", md_metrics))
    for name, (title, render) in sections.items():
        result = report["stages"][name]["result"]
        if result: lines += ["", f"## {title}", ""] + render(result)
    return "\n".join(lines) + "\n"


def stage_report(args) -> dict:
    "Write OUT/gpu_check.json and OUT/gpu_check.md."
    report = collect(args)
    write_json(args.out / "gpu_check.json", report)
    (args.out / "gpu_check.md").write_text(markdown(report))
    return report


# ---------------------------------------------------------------------------------------------------- main
def run_stage(args) -> int:
    "Run one stage, write its part file (numbers or the error) and return the exit code."
    sizes = DRY if args.dry_run else GPU
    part = args.out / "parts" / f"{args.stage}.json"
    t0 = time.perf_counter()
    try:
        device = pick_device(args.dry_run)
        if args.stage == "pytest": result = stage_pytest(args, sizes)
        elif args.stage == "throughput": result = stage_throughput(args, sizes, device, part)
        else: result = stage_metrics(args, sizes, device)
        status, error, code = "ok", None, 0
        if result.get("errors"):
            error = "; ".join(f"{e['job']}: {e['error']}" for e in result["errors"])
            status, code = "error", 1
    except Exception as e:
        traceback.print_exc()
        result, status, error, code = None, "error", short_error(e), 1
    write_json(part, dict(stage=args.stage, status=status, error=error, seconds=time.perf_counter() - t0,
                          sizes=asdict(sizes), result=result))
    return code


def parse_args(argv=None):
    "The command line."
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", required=True, choices=(*STAGES, "report"))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    p.add_argument("--cache", type=Path, default=REPO / ".cache" / "cad_nb", help="where the benchmarks are made")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks that the code runs")
    p.add_argument("--budget", type=float, default=200, help="seconds the throughput stage may spend")
    p.add_argument("--category", default="Aluminum_Plate", help="smoke category of the metrics stage")
    return p.parse_args(argv)


def main(argv=None) -> int:
    "Entry point: one stage per call."
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="anomaly textures")
    if args.stage == "report":
        report = stage_report(args)
        print(f"report: {args.out / 'gpu_check.md'} ({'all stages ok' if report['ok'] else 'some stages failed'})")
        return 0
    return run_stage(args)


if __name__ == "__main__":
    sys.exit(main())
