"""CPU inference time per image of every anomaly method under PyTorch (eager), onnxruntime and OpenVINO, side by side
in one run: batch 1 and 16, 1 and 2 threads, the `cpu` and `paper` profiles' models.

Run: .venv/bin/python tests/benchmarks/bench_export_speed.py [--profiles cpu,paper] [--methods cfrg,rd,...]
     [--size 256] [--out FILE.md] [--json FILE.json]
Each engine runs the same graph, `cad_nb.export.Deployed`: uint8 images in (already at --size, so the in-graph resize
is an identity product), maps at the image's size and scores out. Each model is measured in its own process, one
engine alive at a time, with random weights (the speed does not depend on them; PaDiM's Gaussians are fitted on two
random batches). Each figure is the median of timed calls after --warmup untimed calls (onnxruntime grows its memory
arena over its first two or three calls: 51, 40, then 33 ms for `cpu` CFRG). For CFRG and RD, the time per part of
the model at batch 1 shows where the time goes: under PyTorch (forward hooks) and, in `cpu`, under onnxruntime (each
part exported alone)."""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cad_nb.export import Deployed, OnnxEngine, OpenVinoEngine, save_onnx, save_openvino
from cad_nb.registry import get_method, method_names
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


def parts_onnx_ms(model, size, repeats=10) -> dict:
    """Milliseconds per top-level part of `model` at batch 1 under onnxruntime, 1 thread: each part exported alone
    with the inputs it is given in `predict` (a part called twice counts twice)."""
    import onnxruntime as ort
    from torch.utils._pytree import tree_leaves

    inputs, calls = {}, {}

    def grab(module, args, name):
        inputs.setdefault(name, args)
        calls[name] = calls.get(name, 0) + 1

    hooks = [c.register_forward_pre_hook(lambda m, a, n=n: grab(m, a, n)) for n, c in model.named_children()]
    with torch.no_grad():
        model.predict(torch.rand(1, 3, size, size))
    for h in hooks:
        h.remove()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in inputs.items():
            path, child = Path(tmp) / f"{name}.onnx", getattr(model, name)
            tensors = [a for a in tree_leaves(args) if isinstance(a, torch.Tensor)]
            with torch.no_grad():
                torch.onnx.export(child, tuple(args), path, dynamo=True, verbose=False)
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            feeds = dict(zip(names, (t.numpy() for t in tensors[: len(names)])))
            out[name] = 1000 * calls[name] * median_seconds(lambda _: session.run(None, feeds), None, repeats, 3)
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
    ap.add_argument("--methods", default=",".join(m.lower() for m in method_names("anomaly")))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls at batch 1 (larger batches: half, at least 2)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls before the timed ones")
    ap.add_argument("--out", help="write the table (markdown) here")
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # PROFILE/METHOD: measure one model (in a child process)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    head = (
        f"CPU inference at {args.size}x{args.size}: torch {torch.__version__}, onnxruntime "
        f"{__import__('onnxruntime').__version__}, OpenVINO {__import__('openvino').__version__.split('-')[0]}; "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    )
    if args.one:  # one model in this process: its rows, parts and notes to --part
        profile, name = args.one.split("/")
        Path(args.part).write_text(json.dumps(measure(name, profile, args, threads, batches)))
        return
    print(head, flush=True)
    rows, parts, notes = [], {}, []
    for profile in args.profiles.split(","):
        # each model in its own process: PaDiM's `paper` fit alone peaks at 16.6 GB, and a process that held the
        # models before it had too little left (oneMKL failed inside torch.linalg.inv)
        for name in args.methods.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                part = Path(tmp) / "part.json"
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{profile}/{name}",
                    "--part",
                    str(part),
                    "--size",
                    str(args.size),
                    "--threads",
                    args.threads,
                    "--batches",
                    args.batches,
                    "--repeats",
                    str(args.repeats),
                    "--warmup",
                    str(args.warmup),
                ]
                run = subprocess.run(cmd)
                if run.returncode or not part.is_file():
                    notes.append(f"{profile} / {name}: the measuring process failed (exit code {run.returncode})")
                    continue
                got = json.loads(part.read_text())
            rows += got["rows"]
            parts.update(got["parts"])
            notes += got["notes"]
    table = markdown(head, rows, parts, notes, threads, batches)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(head=head, rows=rows, parts=parts, notes=notes), indent=1))


def measure(name, profile, args, threads, batches) -> dict:
    """Rows (ms/image of each engine, thread count and batch), parts and notes of one model; one engine alive at a
    time (PaDiM's `paper` Gaussians are 5 GB: the model, its export and two engines at once would not fit in 24 GB)."""
    rng = np.random.default_rng(0)
    model = build(name, profile, args.size)
    label = get_method(name).name
    rows, parts, notes = [], {}, []
    if name in ("cfrg", "rd"):
        torch.set_num_threads(1)
        parts[f"{profile} / {label}"] = parts_ms(model, args.size)
        if profile == "cpu":
            parts[f"{profile} / {label}, onnxruntime"] = parts_onnx_ms(model, args.size)
    deployed = Deployed(model, args.size)

    def timed(engine, open_call):
        for n in threads:
            call = open_call(n)
            for batch in batches:
                images = rng.integers(0, 256, (batch, args.size, args.size, 3), np.uint8)
                repeats = args.repeats if batch == 1 else max(2, args.repeats // 2)
                try:
                    ms = 1000 * median_seconds(call, images, repeats, args.warmup) / batch
                except Exception as e:  # an engine that cannot run a batch is a note, and the other rows stay
                    failure = f"{type(e).__name__}: {' '.join(str(e).split())[-160:]}"
                    notes.append(f"{profile} / {label} / {engine} / {n} threads / batch {batch}: failed ({failure})")
                    print(f"  {notes[-1]}", flush=True)
                    continue
                rows.append(dict(profile=profile, method=label, engine=engine, threads=n, batch=batch, ms=ms))
                print(f"  {profile} / {label} / {engine} / {n} threads / batch {batch}: {ms:.1f} ms/image", flush=True)
            del call
            gc.collect()

    timed("torch eager", lambda n: eager(deployed, n))
    with tempfile.TemporaryDirectory() as tmp:
        onnx, xml = Path(tmp) / "m.onnx", Path(tmp) / "m.xml"
        example = torch.from_numpy(rng.integers(0, 256, (2, args.size, args.size, 3), np.uint8))
        try:
            t0 = time.perf_counter()
            save_onnx(deployed, example, onnx, {"outputs": ["maps", "scores"]}, None, None)
            del model, deployed
            gc.collect()
            save_openvino(onnx, xml, {"outputs": ["maps", "scores"]})
            exported = time.perf_counter() - t0
        except Exception as e:  # a model a format cannot hold is a note that says why
            failure = f"{type(e).__name__}: {str(e)[:200]}"
            print(f"  {profile} / {label}: export failed: {failure}", flush=True)
            notes.append(f"{profile} / {label}: export failed ({failure}); PyTorch eager only")
            return dict(rows=rows, parts=parts, notes=notes)
        size_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
        notes.append(f"{profile} / {label}: exported to both formats in {exported:.0f} s ({size_mb:,.0f} MB on disk)")
        timed("onnxruntime", lambda n: OnnxEngine(onnx, threads=n))
        timed("OpenVINO", lambda n: OpenVinoEngine(xml, threads=n))
    return dict(rows=rows, parts=parts, notes=notes)


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
    lines += [
        "",
        "ms / image. Where the time goes, 1 thread, batch 1 (ms; PyTorch unless marked onnxruntime, where each",
        "part is exported and timed alone):",
        "",
    ]
    for name, p in parts.items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in p.items()))
    lines += ["", "Exports:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
