"""CPU inference time per image of every anomaly method under PyTorch (eager), onnxruntime and OpenVINO, side by side
in one run: batch 1 and 16, 1 and 2 threads, the `cpu` and `paper` profiles' models.

Run: .venv/bin/python tests/benchmarks/bench_export_speed.py [--profiles cpu,paper] [--methods cfrg,rd,padim,destseg]
     [--size 256] [--out FILE.md] [--json FILE.json]
Each engine runs the same graph, `cad_nb.export.Deployed`: uint8 images in (already at --size, so the in-graph resize
is an identity product), maps at the image's size and scores out. Randomly initialised weights (the speed does not
depend on them; PaDiM's Gaussians are fitted on two random batches). Each figure is the median of timed calls after
--warmup untimed calls (onnxruntime grows its memory arena over its first two or three calls: 51, 40, then 33 ms for
`cpu` CFRG). For CFRG and RD, the time per part of the model under PyTorch at batch 1 (forward hooks) shows where the
time goes."""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cad_nb.export import Deployed, OnnxEngine, OpenVinoEngine, save_onnx, save_openvino
from cad_nb.registry import get_method
from cad_nb.runner import build_method, make_teacher
from cad_nb.settings import load_profile

warnings.filterwarnings("ignore")


def median_seconds(call, images, repeats, warmup) -> float:
    "Median seconds of `call(images)` after `warmup` untimed calls."
    for _ in range(warmup):
        call(images)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call(images)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def eager(deployed, threads):
    "The deployed model under PyTorch eager with `threads` threads, as a numpy-in callable."

    def call(images):
        torch.set_num_threads(threads)
        with torch.no_grad():
            return deployed(torch.from_numpy(images))

    return call


def parts_ms(model, size, repeats=5) -> dict:
    "Milliseconds per top-level part of `model` at batch 1 under PyTorch (forward hooks), and the whole predict."
    times, starts = {}, {}
    hooks = []
    for name, child in model.named_children():
        hooks.append(child.register_forward_pre_hook(lambda m, i, n=name: starts.__setitem__(n, time.perf_counter())))
        hooks.append(
            child.register_forward_hook(
                lambda m, i, o, n=name: times.__setitem__(n, times.get(n, 0.0) + time.perf_counter() - starts[n])
            )
        )
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        model.predict(x), model.predict(x)
        times.clear()
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.predict(x)
        total = (time.perf_counter() - t0) / repeats
    for h in hooks:
        h.remove()
    out = {k: 1000 * v / repeats for k, v in times.items()}
    out["map, blur and score (the rest)"] = 1000 * total - sum(out.values())
    out["total"] = 1000 * total
    return out


def build(name, profile, size):
    "The model of `name` as `profile` builds it at `size`, random weights, ready to predict."
    cfg = load_profile(
        profile,
        sets={
            "teacher.pretrained": False,
            "data.image_size": size,
            "mtl.pretrained": False,
            "synthesis.textures": "embedded",
        },
    )
    torch.manual_seed(0)
    model = build_method(name, cfg, make_teacher(cfg)).eval()
    if name == "padim":
        model.fit_gaussians([torch.rand(4, 3, size, size), torch.rand(4, 3, size, size)], "cpu")
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="cpu,paper")
    ap.add_argument("--methods", default="cfrg,rd,padim,destseg")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls at batch 1 (larger batches: half, at least 2)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls before the timed ones")
    ap.add_argument("--out", help="write the table (markdown) here")
    ap.add_argument("--json", help="write every measurement here")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    head = (
        f"CPU inference at {args.size}x{args.size}: torch {torch.__version__}, onnxruntime "
        f"{__import__('onnxruntime').__version__}, OpenVINO {__import__('openvino').__version__.split('-')[0]}; "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    )
    print(head, flush=True)
    rows, parts, notes = [], {}, []
    rng = np.random.default_rng(0)
    for profile in args.profiles.split(","):
        for name in args.methods.split(","):
            model = build(name, profile, args.size)
            label = get_method(name).name
            if name in ("cfrg", "rd"):
                torch.set_num_threads(1)
                parts[f"{profile} / {label}"] = parts_ms(model, args.size)
            deployed = Deployed(model, args.size)
            with tempfile.TemporaryDirectory() as tmp:
                example = torch.from_numpy(rng.integers(0, 256, (2, args.size, args.size, 3), np.uint8))
                t0 = time.perf_counter()
                try:
                    save_onnx(deployed, example, Path(tmp) / "m.onnx", {"outputs": ["maps", "scores"]}, None, None)
                    save_openvino(Path(tmp) / "m.onnx", Path(tmp) / "m.xml", {"outputs": ["maps", "scores"]})
                    exported = time.perf_counter() - t0
                    size_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
                    notes.append(
                        f"{profile} / {label}: exported to both formats in {exported:.0f} s "
                        f"({size_mb:,.0f} MB on disk, both formats)"
                    )
                except Exception as e:  # a model a format cannot hold is a row that says why
                    exported, failure = None, f"{type(e).__name__}: {str(e)[:200]}"
                    print(f"  {profile} / {label}: export failed: {failure}", flush=True)
                    notes.append(f"{profile} / {label}: export failed ({failure}); PyTorch eager only")
                for n in threads:
                    engines = {"torch eager": eager(deployed, n)}
                    if exported is not None:
                        engines["onnxruntime"] = OnnxEngine(Path(tmp) / "m.onnx", threads=n)
                        engines["OpenVINO"] = OpenVinoEngine(Path(tmp) / "m.xml", threads=n)
                    for batch in batches:
                        images = rng.integers(0, 256, (batch, args.size, args.size, 3), np.uint8)
                        repeats = args.repeats if batch == 1 else max(2, args.repeats // 2)
                        for engine, call in engines.items():
                            ms = 1000 * median_seconds(call, images, repeats, args.warmup) / batch
                            rows.append(
                                dict(
                                    profile=profile,
                                    method=label,
                                    engine=engine,
                                    threads=n,
                                    batch=batch,
                                    ms=ms,
                                    export_s=exported,
                                )
                            )
                            print(
                                f"  {profile} / {label} / {engine} / {n} threads / batch {batch}: {ms:.1f} ms/image",
                                flush=True,
                            )
                    del engines
            del model, deployed
    table = markdown(head, rows, parts, notes, threads, batches)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(head=head, rows=rows, parts=parts, notes=notes), indent=1))


def markdown(head, rows, parts, notes, threads, batches) -> str:
    "The table: one row per profile, method and engine; a column per (threads, batch); then the parts."
    cols = [(n, b) for n in threads for b in batches]
    lines = [
        head,
        "",
        "| profile | method | engine | " + " | ".join(f"{n} thr, batch {b}" for n, b in cols) + " |",
        "|---|---|---|" + "---:|" * len(cols),
    ]
    keys = []
    for r in rows:
        if (r["profile"], r["method"], r["engine"]) not in keys:
            keys.append((r["profile"], r["method"], r["engine"]))
    for key in keys:
        ms = {(r["threads"], r["batch"]): r["ms"] for r in rows if (r["profile"], r["method"], r["engine"]) == key}
        lines.append("| " + " | ".join(key) + " | " + " | ".join(f"{ms[c]:.1f}" for c in cols) + " |")
    lines += ["", "ms / image. Where the time goes under PyTorch, 1 thread, batch 1 (ms):", ""]
    for name, p in parts.items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in p.items()))
    lines += ["", "Exports:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
