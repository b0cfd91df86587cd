"""How long `cad-nb` takes to start: `--help`, `--version` and `train --help`, each in a fresh process, median of
`--runs` (default 5), and the libraries `import cad_nb.cli` loads. A benchmark, not a test: the time depends on the
machine and what else runs on it (tests/test_package.py checks, without timing, that no heavy library is imported).

    python tests/benchmarks/bench_cli_start.py [--runs 5]
"""
import argparse, shutil, statistics, subprocess, sys, time
from pathlib import Path

HEAVY = ["torch", "torchvision", "timm", "scipy", "sklearn", "pandas", "matplotlib", "skimage"]


def seconds(command, runs) -> float:
    "Median wall time of `command` over `runs` runs (after one unmeasured run that warms the file cache)."
    subprocess.run(command, capture_output=True)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    exe = shutil.which("cad-nb") or str(Path(sys.executable).with_name("cad-nb"))
    print("| command | median s |\n|---|---|")
    for args in (["--help"], ["--version"], ["train", "--help"]):
        print(f"| cad-nb {' '.join(args)} | {seconds([exe, *args], a.runs):.2f} |")
    code = f"import sys, cad_nb.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    print(f"\nheavy libraries imported by `import cad_nb.cli`: {loaded}")
