"`cad-nb train / test / predict` end to end on the smoke benchmarks, every bad input, torchrun, and a wheel install."
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cad_nb import __version__
from cad_nb.cli import main
from cad_nb.data import list_categories, read_category

REPO = Path(__file__).resolve().parents[1]
TINY = ["--profile", "smoke", "--set", "teacher.pretrained=false", "--set", "mtl.pretrained=false", "--quiet"]     # random teacher: nothing is downloaded


def cli(*args):
    "`cad-nb ARGS` in this process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    "The single line an error prints (and that there is no traceback)."
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def train_args(bench, out, *extra):
    category = list_categories(bench)[0]
    return ["train", "--method", "rd", "--data-root", bench, "--category", category, "--out", out, *TINY, *extra]


@pytest.fixture(scope="module")
def run(smoke_benchmark, tmp_path_factory):
    "A tiny RD run (one epoch) on the first smoke category."
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "rd"
    code, _, err = cli(*train_args(smoke_benchmark, out))
    assert code == 0, err
    return out


def state_of(run_dir):
    return torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)


def test_resume_after_an_interrupted_epoch_ends_with_the_same_weights(smoke_benchmark, tmp_path, monkeypatch):
    import cad_nb.baselines as baselines                      # where RD's training step is registered from
    torch.set_num_threads(1)
    code, _, err = cli(*train_args(smoke_benchmark, tmp_path / "straight", "--set", "rd.epochs=2"))
    assert code == 0, err
    calls, rd_step = [], baselines.rd_step
    def interrupted_step(*args, **kwargs):                      # Ctrl-C in the first batch of the second epoch
        calls.append(1)
        if len(calls) == 3: raise KeyboardInterrupt
        return rd_step(*args, **kwargs)
    monkeypatch.setattr(baselines, "rd_step", interrupted_step)
    args = train_args(smoke_benchmark, tmp_path / "resumed", "--set", "rd.epochs=2")
    code, _, err = cli(*args)
    assert code == 130 and "the same command resumes" in one_line(err)
    assert state_of(tmp_path / "resumed")["epoch"] == 0                 # the first epoch is kept
    code, out, err = cli("test", "--run", tmp_path / "resumed")          # its checkpoint scores; no threshold yet
    assert code == 0 and "note: this run is interrupted" in err and "run's threshold" not in out, err
    code, _, err = cli("predict", "--run", tmp_path / "resumed", "--images", smoke_benchmark)
    assert code == 1 and "no calibration yet (it was interrupted): the same cad-nb train command" in one_line(err)
    monkeypatch.setattr(baselines, "rd_step", rd_step)
    code, _, err = cli(*args)
    assert code == 0, err
    straight, resumed = state_of(tmp_path / "straight"), state_of(tmp_path / "resumed")
    assert resumed["epoch"] == 1 and straight["model"].keys() == resumed["model"].keys()
    for k, v in straight["model"].items(): assert torch.equal(v, resumed["model"][k]), k
    records = [json.loads((tmp_path / d / "run.json").read_text()) for d in ("straight", "resumed")]
    assert records[0]["parameter_digests"] == records[1]["parameter_digests"] and records[1]["status"] == "complete"
    assert len(pd.read_csv(tmp_path / "resumed" / "history.csv")) == 2
    code, _, err = cli(*args[:-2], "--set", "rd.epochs=3")                  # same folder, other settings: refused
    assert code == 2 and "holds another run (rd.epochs: 2 there, 3 here)" in one_line(err)
    code, _, err = cli(*args, "--set", "mtl.steps=7", "--set", "runtime.device=cpu")   # what RD does not read: resumes
    assert code == 0, err


def test_run_folder_records_settings_and_provenance(run):
    record = json.loads((run / "run.json").read_text())
    assert record["method"] == "RD" and record["status"] == "complete" and record["world_size"] == 1
    assert record["settings"]["teacher.pretrained"] is False and record["settings"]["data.image_size"] == 64
    assert record["weights"] == "randomly initialised (pretrained=False)"
    assert record["cad_nb"] and record["profile"] == "smoke"
    assert list(pd.read_csv(run / "history.csv").columns[:3]) == ["epoch", "lr", "loss"]


def test_test_then_predict_a_folder_with_a_corrupt_file(run, smoke_benchmark, tmp_path):
    code, out, err = cli("test", "--run", run)
    assert code == 0, err
    tested = json.loads((run / "metrics.json").read_text())
    assert {"p_auroc", "i_auroc", "aupro"} <= set(tested["metrics"]) and tested["threshold"] is not None
    assert "| p_auroc |" in (run / "metrics.md").read_text()
    images = tmp_path / "images"; images.mkdir()
    source = sorted((smoke_benchmark / json.loads((run / "run.json").read_text())["category"] / "test").rglob("*.png"))
    Image.open(source[0]).convert("RGB").save(images / "a.png")
    Image.open(source[-1]).convert("RGB").resize((70, 50)).save(images / "b_small.jpg")   # any size
    (images / "broken.png").write_bytes(b"not an image")
    code, out, err = cli("predict", "--run", run, "--images", images, "--out", tmp_path / "pred")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 2 and "broken.png" in lines[0] and "1 of 3 images could not be read" in lines[1]
    table = pd.read_csv(tmp_path / "pred" / "predictions.csv", skiprows=1)
    assert [Path(p).name for p in table.path] == ["a.png", "b_small.jpg"]
    assert set(table.anomalous) <= {0, 1} and np.isfinite(table.score).all()
    for path, heat, amap in zip(table.path, table.heatmap, table["map"]):
        size = Image.open(path).size
        width, height = Image.open(tmp_path / "pred" / heat).size           # image | heat map | colour bar
        assert height == size[1] and width > 2 * size[0]
        assert np.load(tmp_path / "pred" / amap).shape == size[::-1]          # the map at the image's own size
    code, _, err = cli("predict", "--run", run, "--images", images / "*.jpg", "--threshold", "-1")
    assert code == 0, err
    assert pd.read_csv(run / "predictions" / "predictions.csv", skiprows=1).anomalous.tolist() == [1]



def test_threshold_and_heat_scale_are_fixed_at_training_from_held_out_good_images(smoke_benchmark, tmp_path):
    """The decision threshold and the heat maps' colour scale come from good training images held out of training,
    before any test image is seen: `test` measures the threshold and never moves it, `predict` draws the same picture
    whether or not the run was tested, and a test split of good images only warns in one line."""
    data, run = tmp_path / "data", tmp_path / "rd"
    shutil.copytree(smoke_benchmark, data)
    code, _, err = cli(*train_args(data, run, "--set", "calibration.holdout=0.5"))
    assert code == 0, err
    record = json.loads((run / "run.json").read_text())
    calibration = record["calibration"]
    assert (record["train_images"], record["held_out_images"], calibration["images"]) == (5, 5, 5)
    assert "the 0.99 quantile of the image scores of 5 good training images held out of training" in calibration["rule"]
    low, high = calibration["map_range"]
    assert calibration["scores"]["min"] <= calibration["threshold"] <= calibration["scores"]["max"] and low < high
    category = record["category"]
    images = tmp_path / "images"; images.mkdir()
    for p in sorted((data / category / "test").rglob("*.png"))[::4]:
        shutil.copy(p, images / f"{p.parent.name}_{p.name}")
    code, _, err = cli("predict", "--run", run, "--images", images, "--out", tmp_path / "before")
    assert code == 0, err
    header = (tmp_path / "before" / "predictions.csv").read_text().splitlines()[0]
    assert header.startswith("# " + calibration["rule"]) and "heat maps on the run's scale" in header
    for folder in (data / category / "test").iterdir():        # the test split: good images only
        if folder.name != "good":
            shutil.rmtree(folder)
    shutil.rmtree(data / category / "ground_truth", ignore_errors=True)
    code, _, err = cli("test", "--run", run)
    assert code == 0, err
    warned = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(warned) == 1 and "set to NaN" in warned[0] and "Traceback" not in err, err
    tested = json.loads((run / "metrics.json").read_text())
    assert (tested["threshold"], tested["threshold_rule"]) == (calibration["threshold"], calibration["rule"])
    assert 0 <= tested["at_threshold"]["good_flagged"] <= 1
    code, _, err = cli("predict", "--run", run, "--images", images, "--out", tmp_path / "after")
    assert code == 0, err
    before, after = (pd.read_csv(tmp_path / d / "predictions.csv", skiprows=1) for d in ("before", "after"))
    assert before.anomalous.tolist() == after.anomalous.tolist()
    for heat in before.heatmap:                                  # one scale per run: the same picture
        assert (tmp_path / "before" / heat).read_bytes() == (tmp_path / "after" / heat).read_bytes()


def test_too_few_training_images_to_spare_calibrate_on_the_training_images(run, smoke_benchmark, tmp_path):
    record = json.loads((run / "run.json").read_text())
    assert (record["train_images"], record["held_out_images"]) == (10, 0)
    assert "the 10 training images themselves (too few to hold any out)" in record["calibration"]["rule"]
    code, _, err = cli(*train_args(smoke_benchmark, tmp_path / "bad", "--set", "calibration.holdout=1.5"))
    assert code == 2 and "calibration.holdout = 1.5: a share of the training images in [0, 1)" in one_line(err)

BAD_TRAIN = [
    (["--method", "patchcore"], 2, "unknown method 'patchcore'; registered: CFRG, RD, PaDiM"),
    (["--category", "Nope"], 2, "--category Nope: not in"),
    (["--set", "epochs=2"], 2, "no setting 'epochs'; settings are named section.key (did you mean cfrg.epochs or rd.epochs"),
    (["--set", "rd.epoch=2"], 2, "no setting 'rd.epoch'"),
    (["--set", "rd.epochs=two"], 2, "rd.epochs takes an integer"),
    (["--set", "teacher.pretrained=maybe"], 2, "teacher.pretrained takes true or false"),
    (["--profile", "gpu"], 2, "--profile gpu: no profile 'gpu'"),
    (["--set", "data.image_size=100"], 2, "data.image_size = 100 is not a multiple of 32"),        # a profile that cannot run
]


@pytest.mark.parametrize("change,code,message", BAD_TRAIN)
def test_bad_train_arguments(smoke_benchmark, tmp_path, change, code, message):
    args = train_args(smoke_benchmark, tmp_path / "run")
    for i in range(0, len(change), 2):                      # replace the option's value, or add the option
        if change[i] in args and change[i] != "--set": args[args.index(change[i]) + 1] = change[i + 1]
        else: args += change[i:i + 2]
    got, _, err = cli(*args)
    assert got == code and message in one_line(err)
    assert not (tmp_path / "run").exists()


def test_data_roots_in_neither_layout(tmp_path, smoke_benchmark):
    (tmp_path / "photos").mkdir(); (tmp_path / "photos" / "x.png").write_bytes(b"")
    for root in (tmp_path / "photos", tmp_path / "missing"):
        code, _, err = cli("train", "--method", "rd", "--data-root", root, "--category", "x", *TINY)
        assert code == 2 and f"--data-root {root}" in one_line(err)
    code, _, err = cli("train", "--method", "mtl", "--data-root", smoke_benchmark, *TINY)
    assert code == 2 and "no annotations/train.json" in one_line(err)


def test_bad_run_folders(run, tmp_path):
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 30)).save(image)
    code, _, err = cli("test", "--run", tmp_path)
    assert code == 2 and "no run.json there" in one_line(err)
    shutil.copytree(run, tmp_path / "no_ckpt"); (tmp_path / "no_ckpt" / "checkpoint.pt").unlink()
    code, _, err = cli("test", "--run", tmp_path / "no_ckpt")
    assert code == 2 and "no checkpoint.pt there" in one_line(err)
    cases = [("other_method", dict(method="PaDiM"), "holds a ReverseDistillation model, not the PaDiM"),
             ("other_version", dict(cad_nb="0.0.1"), "written by cad_nb 0.0.1")]
    for name, change, message in cases:
        shutil.copytree(run, tmp_path / name)
        record = json.loads((tmp_path / name / "run.json").read_text())
        (tmp_path / name / "run.json").write_text(json.dumps({**record, **change}))
        for args in (["test"], ["predict", "--images", image]):
            code, _, err = cli(*args, "--run", tmp_path / name)
            assert code == 1 and message in one_line(err)
    shutil.copytree(run, tmp_path / "corrupt"); (tmp_path / "corrupt" / "checkpoint.pt").write_bytes(b"garbage")
    code, _, err = cli("test", "--run", tmp_path / "corrupt")
    assert code == 1 and "could not be read" in one_line(err) and "checkpoint.pt" in err
    code, _, err = cli("predict", "--run", run, "--images", tmp_path / "*.tif")
    assert code == 2 and "no image files there" in one_line(err)


def test_multitask_train_test_predict(tmp_path):
    from cad_nb.benchmark import make_car_benchmark
    torch.set_num_threads(1)
    root = make_car_benchmark(tmp_path / "data", "smoke", seed=0)
    run = tmp_path / "mtl"
    code, out, err = cli("train", "--method", "mtl", "--data-root", root, "--out", run, "--tasks", "cls", "seg",
                         "--weighting", "static", *TINY)
    assert code == 0, err
    record = json.loads((run / "run.json").read_text())
    assert record["mtl"]["tasks"] == ["cls", "seg"] and record["weights"].startswith("randomly initialised")
    code, out, err = cli("test", "--run", run)
    assert code == 0, err
    assert {"accuracy", "map50", "miou"} <= set(json.loads((run / "metrics.json").read_text())["metrics"])
    code, out, err = cli("predict", "--run", run, "--images", root / "images" / "test")
    assert code == 0, err
    table = pd.read_csv(run / "predictions" / "predictions.csv", skiprows=1)
    assert len(table) == len(list((root / "images" / "test").iterdir())) and table.predicted_class.notna().all()


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAD_NB_SETTINGS")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def test_torchrun_two_gloo_processes_end_with_the_same_parameters(smoke_benchmark, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cad_nb.cli",
           *map(str, train_args(smoke_benchmark, out, "--set", "runtime.device=cpu", "--set", "rd.epochs=2"))]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env(PYTHONPATH=str(REPO)))
    assert res.returncode == 0, res.stdout + res.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["world_size"] == 2 and len(set(record["parameter_digests"])) == 1 and record["status"] == "complete"
    assert res.stdout.count("RD: complete") == 1                            # rank 0 alone reports
    assert state_of(out)["epoch"] == 1


def test_wheel_runs_outside_a_checkout(tmp_path):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, REPO], check=True,
                   capture_output=True)
    wheel = next(wheels.glob("cad_nb-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, capture_output=True)
    env = _env(PYTHONPATH=str(site))
    def run_cli(*args):
        return subprocess.run([sys.executable, "-m", "cad_nb.cli", *map(str, args)], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300)
    where = subprocess.run([sys.executable, "-c", "import cad_nb; print(cad_nb.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True).stdout
    assert where.startswith(str(site)), where
    res = run_cli("reproduce", "--list")
    assert res.returncode == 0, res.stderr
    assert {"03_stats", "20_cfrg_tables", "30_mtl_results"} <= set(res.stdout.split())
    res = run_cli("reproduce", "--profile", "smoke", "--only", "stats", "--out", tmp_path / "figs")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "figs" / "table1_dataset_stats.csv").is_file() and (tmp_path / "figs" / "manifest.json").is_file()
    assert (elsewhere / "outputs" / "smoke" / "03_stats.ipynb").is_file()       # executed copies in the current folder
    assert not any(site.rglob("manifest.json")) and not (site / "cad_nb" / "outputs").exists()   # none in the package
    res = run_cli("train", "--method", "nope", "--data-root", ".")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "unknown method 'nope'" in res.stderr


def test_padim_is_fitted_checkpointed_and_reloaded(smoke_benchmark, tmp_path):
    torch.set_num_threads(1)
    category = list_categories(smoke_benchmark)[0]
    run = tmp_path / "padim"
    code, _, err = cli("train", "--method", "PaDiM", "--data-root", smoke_benchmark, "--category", category,
                       "--out", run, *TINY)
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["status"] == "complete" and not (run / "history.csv").exists()
    source = next((smoke_benchmark / category / "test").rglob("*.png"))
    for folder in ("a", "b"):                                               # one file name in two folders
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "part.png")
    code, _, err = cli("predict", "--run", run, "--images", tmp_path / "*" / "part.png")
    assert code == 0, err
    table = pd.read_csv(run / "predictions" / "predictions.csv", skiprows=1)
    assert table["map"].tolist() == ["a/part.npy", "b/part.npy"] and table.score[0] == table.score[1]   # the tree, mirrored


def test_test_labels_come_from_the_folders_not_the_resized_masks(smoke_benchmark, tmp_path):
    "With the release's nearest resize a defect smaller than one resized pixel vanishes from its mask; the image stays defective."
    from cad_nb.data import read_category, resize_mask
    torch.set_num_threads(1)
    category = list_categories(smoke_benchmark)[0]
    shutil.copytree(smoke_benchmark / category, tmp_path / "data" / category)
    defective = [s for s in read_category(tmp_path / "data", category) if s.split == "test" and s.label]
    for s in defective:                                       # each defect becomes one pixel that nearest resizing skips
        h, w = np.asarray(Image.open(s.mask_path)).shape[:2]
        for y in range(1, h - 1):
            tiny = np.zeros((h, w), bool); tiny[y, y % w] = True
            if not resize_mask(tiny, 64, "nearest").any(): break
        else: pytest.fail(f"no pixel of {s.mask_path} vanishes under nearest resizing to 64")
        Image.fromarray(tiny.astype(np.uint8) * 255).save(s.mask_path)
    run = tmp_path / "padim"
    code, _, err = cli("train", "--method", "PaDiM", "--data-root", tmp_path / "data", "--category", category, "--out", run,
                       *TINY, "--set", "data.mask_resize=nearest")
    assert code == 0, err
    code, out, err = cli("test", "--run", run)
    assert code == 0, err
    result = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(result["metrics"]["i_auroc"])          # labels read off the emptied masks: every image "good", I-AUROC undefined
    assert 0 <= result["at_threshold"]["defective_found"] <= 1  # both classes present
    assert result["metrics"]["p_auroc"] is None               # the pixel metrics do see no defect pixel (NaN, written as null)


def test_benchmark_subsampling_never_applies_to_a_users_folder(smoke_benchmark, tmp_path):
    "bench.max_train / bench.max_test budget the benchmark notebooks; `cad-nb` trains on and scores every image."
    out, category = tmp_path / "rd", list_categories(smoke_benchmark)[0]
    code, _, err = cli(*train_args(smoke_benchmark, out, "--set", "bench.max_train=2", "--set", "bench.max_test=2"))
    assert code == 0, err
    code, _, err = cli("test", "--run", out)
    assert code == 0, err
    samples = read_category(smoke_benchmark, category)
    assert json.loads((out / "run.json").read_text())["train_images"] == sum(s.split == "train" for s in samples)
    assert json.loads((out / "metrics.json").read_text())["test_images"] == sum(s.split == "test" for s in samples)


def test_version_and_bare_command():
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"cad-nb {__version__}"
    code, out, _ = cli()
    assert code == 2 and all(c in out for c in ("reproduce", "train", "test", "predict", "data"))   # the help, not an error


def test_bad_test_data_stops_training_before_it_starts(smoke_benchmark, tmp_path):
    "A corrupt test image used to be found by `test`, after the whole training; `train` checks the category first."
    category = list_categories(smoke_benchmark)[0]
    root = tmp_path / "data"
    shutil.copytree(smoke_benchmark / category, root / category)
    broken = sorted((root / category / "test").rglob("*.png"))[0]
    broken.write_bytes(b"not a png")
    code, _, err = cli(*train_args(root, tmp_path / "run"))
    line = one_line(err)
    assert code == 1 and str(broken) in line and "--skip-check" in line
    assert not (tmp_path / "run").exists()                                   # nothing trained, nothing written
    code, _, err = cli(*train_args(root, tmp_path / "run", "--skip-check"))
    assert code == 0, err


def test_predict_mirrors_the_input_tree_and_writes_the_csv_as_it_goes(run, smoke_benchmark, tmp_path, monkeypatch):
    import cad_nb.cli as cli_module
    category = json.loads((run / "run.json").read_text())["category"]
    source = sorted((smoke_benchmark / category / "test").rglob("*.png"))
    images, out = tmp_path / "images", tmp_path / "pred"
    for k, rel in enumerate(["line1/000.png", "line2/000.png", "line2/001.png"]):
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source[k], images / rel)
    code, _, err = cli("predict", "--run", run, "--images", images, "--out", out)
    assert code == 0, err
    table = pd.read_csv(out / "predictions.csv", skiprows=1)
    assert list(table.heatmap) == ["line1/000_heatmap.png", "line2/000_heatmap.png", "line2/001_heatmap.png"]
    assert all((out / h).is_file() for h in table.heatmap) and all((out / m).is_file() for m in table["map"])
    real, calls = cli_module.predict_image, []
    def interrupted_at_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3: raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(cli_module, "predict_image", interrupted_at_the_third)
    code, _, err = cli("predict", "--run", run, "--images", images, "--out", out)
    assert code == 130 and "predictions.csv lists the images done so far" in one_line(err)
    assert len(pd.read_csv(out / "predictions.csv", skiprows=1)) == 2                     # the rows done before the interrupt
    assert not (out / "line2/001_heatmap.png").exists()                        # the previous run's files went first


# ---- run folders: one train per folder, interruptions recorded (issue 18, item 7) ---------------------------

def test_a_second_train_into_a_folder_in_use_is_refused(smoke_benchmark, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / ".lock").write_text(json.dumps(dict(pid=os.getpid(), host=__import__("socket").gethostname())))
    code, _, err = cli(*train_args(smoke_benchmark, out))
    assert code == 2 and f"is in use by another `cad-nb train` (pid {os.getpid()} on" in one_line(err)
    assert not (out / "run.json").exists()                                     # nothing was written


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_train_says_so_and_frees_its_folder(smoke_benchmark, tmp_path, monkeypatch, how):
    import signal
    import cad_nb.baselines as baselines
    torch.set_num_threads(1)
    def interrupted_step(*args, **kwargs):
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)                               # as a scheduler ending the job
        raise KeyboardInterrupt
    monkeypatch.setattr(baselines, "rd_step", interrupted_step)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = cli(*train_args(smoke_benchmark, tmp_path / "run"))
    expected = (143, "terminated (SIGTERM): ") if how == "sigterm" else (130, "interrupted: ")
    assert code == expected[0] and one_line(err).startswith(f"cad-nb: error: {expected[1]}"), err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "interrupted" and "status_since" in record
    assert not (tmp_path / "run" / ".lock").exists()                           # the next command may train
    assert signal.getsignal(signal.SIGTERM) == before                           # main put the old handler back


def test_testing_a_stopped_run_says_so(smoke_benchmark, tmp_path):
    torch.set_num_threads(1)
    code, _, err = cli(*train_args(smoke_benchmark, tmp_path / "run", "--set", "rd.epochs=2", "--stop-after", "1"))
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "stopped after 1 of 2 epochs" and record["started"] <= record["finished"]
    code, _, err = cli("test", "--run", tmp_path / "run")
    assert code == 0 and "note: this run is stopped after 1 of 2 epochs: testing its last checkpoint" in err, err


def test_multitask_options_are_checked_before_training(tmp_path):
    "--tasks, --weighting and --scheduler are checked against the multi-task code's names (the parser imports none)."
    for option, value, known in [("--weighting", "bogus", "static, coba, dwa, uw"), ("--tasks", "depth", "cls, det, seg"),
                                 ("--scheduler", "random", "round_robin, proportional, adaptive")]:
        code, _, err = cli("train", "--method", "mtl", "--data-root", tmp_path, "--out", tmp_path / "o", option, value, *TINY)
        assert code == 2 and f"{option} {value}: choose from {known}" in one_line(err)
    assert not (tmp_path / "o").exists()


def test_train_help_names_every_choice_the_code_knows():
    "The help names the choices without importing the code that defines them; this keeps the two the same."
    from cad_nb import mtl
    from cad_nb.coba import WEIGHTINGS, TaskScheduler
    from cad_nb.registry import BUILT_IN
    code, out, _ = cli("train", "--help")
    assert code == 0
    text = " ".join(out.split())
    for name in [*mtl.TASKS, *WEIGHTINGS, *TaskScheduler.policies, *(n for names in BUILT_IN.values() for n in names)]:
        assert name in text, name


def test_export_and_predict_name_the_formats_the_export_module_knows():
    "The parser lists the engines and suffixes without importing cad_nb.export (torch); this keeps them the same."
    from cad_nb import cli as cli_module
    from cad_nb.export import FORMATS
    assert list(cli_module.ENGINES) == ["torch", *FORMATS]
    assert {Path(f).suffix: fmt for fmt, f in FORMATS.items()} == cli_module.SUFFIXES
    code, out, _ = cli("export", "--help")
    assert code == 0 and all(fmt in out for fmt in FORMATS)
