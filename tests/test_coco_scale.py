"""tests/benchmarks/bench_coco_scale.py runs end to end, small (2,000 images, the smoke profile's model, a few steps),
and reports every figure: the reader read every image, the loader and the step took time. Its speed is measured by
the benchmark, not asserted here."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "benchmarks" / "bench_coco_scale.py"


def test_coco_scale_benchmark_reports_every_figure(tmp_path):
    out = tmp_path / "coco_scale.json"
    args = ["--images", "2000", "--profile", "smoke", "--steps", "3", "--batches", "2", "--out", str(out)]
    done = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "read_coco wall time" in done.stdout
    r = json.loads(out.read_text())
    assert r["read"]["images"] == 2000
    assert 1000 < r["read"]["annotations"] < 6000  # a quarter without annotations, the others 1-3
    assert 0 < r["read"]["seconds"] and r["read"]["peak_rss_mb"] >= r["read"]["rss_before_mb"] > 0
    assert r["loader"]["workers"] == 2 and r["loader"]["images"] == 2 * 3 * r["loader"]["batch_size"]
    assert r["loader"]["images_per_s"] > 0
    step = r["step"]
    assert step["compute_s"] > 0 and step["fed_s"] > 0 and step["loader_s"] > 0
    assert r["json_mb"] > 0 and r["write_s"] > 0
