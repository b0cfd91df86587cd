"""The `paper` profile's code paths on every change: every experiment notebook under `paper-smoke`.

`paper-smoke` builds on `paper` (settings.ini) and changes only sizes: the embedded smoke benchmark at 64 px, one
epoch or a step or two, random weights where the releases' cannot be had offline. So the release-size modules
(CFRG's 105,312,881 trained parameters on WRN50-2, RD4AD's bottleneck and decoder, DeSTSeg's ResNet-18 pair,
ConvNeXt-T and DINOv3 ViT-S for the multi-task model), DTD blending with a texture per image, `nearest` test
masks and the release's map style run end to end in `make test`, long before anyone pays for a GPU. DTD comes
from ../shared/datasets/dtd_subset (the profile's `synthesis.dtd_root`), the real datasets from ../shared too.
"""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
CAD_NB = str(Path(sys.executable).with_name("cad-nb"))


@pytest.mark.skipif(not (SHARED / "dtd_subset").is_dir(), reason=f"the DTD subset is not at {SHARED / 'dtd_subset'}")
def test_every_experiment_notebook_runs_under_paper_smoke(tmp_path):
    real = tmp_path / "real"
    for name, folder in [("mtd", "magnetic_tile"), ("car_damage", "car_damage"), ("dtd", "dtd_subset")]:
        got = subprocess.run([CAD_NB, "data", "get", name, "--from", str(SHARED / folder), "--out", str(real)],
                             capture_output=True, text=True)
        assert got.returncode == 0, got.stderr
    out = tmp_path / "figures"
    run = subprocess.run([CAD_NB, "reproduce", "--profile", "paper-smoke", "--out", str(out), "--real-data", str(real)],
                         cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "8 notebooks ok, 0 failed, 0 skipped" in run.stdout, run.stdout[-2000:]
    note = (out / "cfrg_table3_pixel.md").read_text().splitlines()[0]
    assert "Profile paper-smoke: 64px" in note and "segmentation width 256" in note and "resized nearest" in note
    assert (out / "mtl_main_summary.csv").is_file() and (out / "mtd_results.csv").is_file()
