"""The prepared GPU check (tests/benchmarks/gpu_check.sh) in its CPU dry run: every stage must run and report numbers,
so that the script a GPU session runs as is cannot rot while the code it drives changes."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "benchmarks" / "gpu_check.sh"
STAGES = ("install", "pytest", "throughput", "metrics")
JOBS = {("CFRG", "teacher tf_efficientnet_lite0"), ("CFRG", "teacher wide_resnet50_2"),
        ("RD", "teacher wide_resnet50_2"), ("DeSTSeg", "phase 1 (student)"), ("DeSTSeg", "phase 2 (segmentation)"),
        ("MultiTask", "backbone convnext_tiny"), ("MultiTask", "backbone vit_small_patch16_dinov3")}
METRICS = ("i_auroc", "p_auroc", "p_ap", "aupro", "pro_3cad")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="the check is a bash script that needs bash and coreutils' timeout")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    "One dry run of the check, its output folder and its report."
    out, cache = tmp_path_factory.mktemp("gpu_check_out"), tmp_path_factory.mktemp("gpu_check_cache")
    # One thread: under `pytest -n 2` the other worker keeps one core busy, and two torch threads on the one core
    # left spin against each other (the dry run takes 53 s alone, its slowest job 9 s, yet one job ran past its
    # 180 s box in a fresh-clone CI run).
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_CACHE": str(cache), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1500)           # about 50 s on 2 idle cores; its time boxes add to 1,200 s
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").is_file() else None
    return run, out, report


def positive(x) -> bool:
    "A finite number above zero."
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_dry_run_exits_cleanly(dry_run):
    run, out, report = dry_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert report is not None and report["ok"]
    for name in ("gpu_check.md", "gpu_check.log", "parts/stages.tsv"):
        assert (out / name).is_file(), name


def test_every_stage_reported_numbers(dry_run):
    _, _, report = dry_run
    assert set(report["stages"]) == set(STAGES)
    for name, stage in report["stages"].items():
        assert stage["status"] == "ok" and stage["error"] is None, (name, stage["error"])
        assert stage["seconds"] is not None and stage["seconds"] >= 0, name
        assert name == "install" or stage["result"], name
    env = report["environment"]
    assert env["dry_run"] and env["torch"] and env["timm"] and env["device"].startswith("CPU")
    assert env["command"] == "bash tests/benchmarks/gpu_check.sh --dry-run"


def test_pytest_stage_counts(dry_run):
    result = dry_run[2]["stages"]["pytest"]["result"]
    assert result["collected"] >= 1 and result["failed"] == 0 and result["errors"] == 0
    assert result["passed"] + result["skipped"] == result["collected"]
    assert any("test_batch_on_gpu" in t["test"] for t in result["tests"])
    assert all("gpu_check" not in t["test"] for t in result["tests"])           # never itself


def test_throughput_rows(dry_run):
    result = dry_run[2]["stages"]["throughput"]["result"]
    assert result["errors"] == []
    rows = {(r["model"], r["config"], r["precision"]): r for r in result["rows"]}
    assert set(rows) == {(*job, p) for job in JOBS for p in ("fp32", "bf16")}
    for key, r in rows.items():
        for field in ("images_per_s", "compute_images_per_s", "step_ms", "loss", "trainable_params"):
            assert positive(r[field]), (key, field, r[field])
        assert 0 <= r["data_wait_share"] <= 1, key


def test_metrics_fp32_and_bf16(dry_run):
    result = dry_run[2]["stages"]["metrics"]["result"]
    fp32, bf16 = result["runs"]["fp32"]["metrics"], result["runs"]["bf16"]["metrics"]
    for k in METRICS:
        assert 0 <= fp32[k] <= 1 and 0 <= bf16[k] <= 1, k
        assert result["diff"][k] == pytest.approx(bf16[k] - fp32[k]), k
    assert result["runs"]["fp32"]["steps"] == result["runs"]["bf16"]["steps"] == result["steps"]


def test_markdown_tables(dry_run):
    md = (dry_run[1] / "gpu_check.md").read_text()
    for title in ("## Stages", "## CUDA tests", "## Training throughput", "## fp32 vs bf16 metrics"):
        assert title in md, title
    assert md.count("| CFRG |") == 4 and "| i_auroc |" in md


def test_without_cuda_one_line_error(tmp_path):
    "Without --dry-run on a machine without CUDA, one clear line and exit code 2 (no stage runs)."
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and "no CUDA device" in run.stderr
    assert not (tmp_path / "out").exists()
