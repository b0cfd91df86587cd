"""`cad-nb export` and `cad-nb predict --engine`: every registered method, both formats, on the smoke benchmark. The
exported files must give PyTorch's maps and scores (1e-4 of their magnitude) and the same decision for every image."""
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cad_nb.data import list_categories, load_image
from test_cli import TINY, cli, one_line  # `cad-nb ARGS` in this process, its one-line errors, the tiny settings

ANOMALY = ["cfrg", "rd", "padim", "destseg", "simplenet", "draem", "rd++", "fastflow"]
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
FORMATS = ["onnx", "openvino"] if HAS_OPENVINO else ["onnx"]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="cad_nb[deploy] not installed")


@pytest.fixture(scope="module")
def car_benchmark(tmp_path_factory):
    from cad_nb.benchmark import make_car_benchmark

    return make_car_benchmark(tmp_path_factory.mktemp("car"), "smoke", seed=0)


def trained(method, smoke_benchmark, car_benchmark, out):
    "A smoke run of `method` in `out`, exported to every format: (run folder, test images)."
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if method == "mtl":
        args = ["--data-root", car_benchmark, "--weighting", "static"]
        images = sorted((car_benchmark / "images" / "test").iterdir())
    else:
        category = list_categories(smoke_benchmark)[0]
        args = ["--data-root", smoke_benchmark, "--category", category]
        images = sorted((smoke_benchmark / category / "test").rglob("*.png"))
    code, _, err = cli("train", "--method", method, "--out", out, *args, *TINY)
    assert code == 0, err
    code, printed, err = cli("export", "--run", out, "--format", *FORMATS)
    assert code == 0, err
    assert printed.count("its outputs equal PyTorch's") == len(FORMATS), printed
    return out, images


@pytest.mark.parametrize("method", [*ANOMALY, "mtl"])
def test_every_method_exports_with_pytorchs_scores(method, smoke_benchmark, car_benchmark, tmp_path):
    from cad_nb.export import FORMATS as FILES, TorchEngine, agreement, open_engine
    from cad_nb.runs import load_model, load_run

    run, paths = trained(method, smoke_benchmark, car_benchmark, tmp_path / method)
    record = load_run(run)
    reference = TorchEngine(load_model(run, record), record)
    images = [load_image(p) for p in paths[:12]]
    for fmt in FORMATS:
        engine = open_engine(run / FILES[fmt])
        agree = agreement(reference, engine, images, engine.meta)
        assert agree["map"] < 1e-4 and agree["score"] < 1e-4 and agree["decisions_differ"] == 0, (fmt, agree)
        assert engine.meta["method"] == record["method"] and engine.meta["weights"] == record["weights"]
        if method == "mtl":  # the three heads' outputs, as probabilities
            out = engine(images[0][None])
            n = len(record["mtl"]["class_names"])
            assert out["class_probs"].shape == (1, n) and np.allclose(out["class_probs"].sum(1), 1, atol=1e-5)
            assert out["seg_probs"].shape[1] == n and out["det_heatmap"].shape[1] == n - 1
        else:
            assert engine.meta["threshold"] == record["calibration"]["threshold"]
    # predict under each engine writes the same CSV as under PyTorch (scores to 1e-4, every decision)
    folder = paths[0].parent
    tables = {}
    for engine in ["torch", *FORMATS]:
        code, _, err = cli("predict", "--run", run, "--images", folder, "--engine", engine, "--out", tmp_path / engine)
        assert code == 0, err
        tables[engine] = pd.read_csv(tmp_path / engine / "predictions.csv", skiprows=1)
    for fmt in FORMATS:
        a, b = tables["torch"], tables[fmt]
        assert list(a.path) == list(b.path) and (a.anomalous.fillna(-1) == b.anomalous.fillna(-1)).all()
        assert np.allclose(a.score, b.score, rtol=1e-4, atol=1e-7)
        assert list(a.predicted_class.astype(str)) == list(b.predicted_class.astype(str))


def test_export_bad_input(smoke_benchmark, tmp_path):
    category = list_categories(smoke_benchmark)[0]
    run = tmp_path / "padim"
    code, _, err = cli("train", "--method", "padim", "--data-root", smoke_benchmark, "--category", category,
                       "--out", run, *TINY)
    assert code == 0, err
    code, _, err = cli("export", "--run", run, "--format", "tflite")
    assert code == 2 and "choose one of onnx, openvino" in one_line(err)
    code, _, err = cli("export", "--run", tmp_path / "nothing", "--format", "onnx")
    assert code == 2 and "no run.json there" in one_line(err)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "run.json").write_text((run / "run.json").read_text())
    code, _, err = cli("export", "--run", tmp_path / "empty", "--format", "onnx")
    assert code == 2 and "no checkpoint.pt there" in one_line(err)
    code, _, err = cli("export", "--run", run, "--format", "onnx", "--batch", "0")
    assert code == 2 and "--batch" in err
    code, _, err = cli("export", "--run", run, "--format", "onnx", "--image-size", "12x")
    assert code == 2 and "give S or HxW" in err
    code, _, err = cli("predict", "--run", run, "--images", smoke_benchmark, "--engine", "onnx")
    assert code == 2 and "cad-nb export --run" in one_line(err)  # not exported yet: the command that does it
    # an export with a fixed shape, and one image of another size
    code, _, err = cli("export", "--run", run, "--format", "onnx", "--image-size", "64", "--batch", "1")
    assert code == 0, err
    image = next((smoke_benchmark / category / "test").rglob("*.png"))
    code, _, err = cli("predict", "--run", run, "--images", image, "--engine", "onnx")
    assert code == 2 and "export it without --batch and --image-size" in one_line(err)
    # an exported model's runner given four channels
    from cad_nb.core import RunError
    from cad_nb.export import open_engine

    engine = open_engine(run / "model.onnx")
    with pytest.raises(RunError, match="it was given uint8 1 x 64 x 64 x 4"):
        engine(np.zeros((1, 64, 64, 4), np.uint8))
    # a file left over from an earlier training is refused, not used
    code, _, err = cli("export", "--run", run, "--format", "onnx")
    assert code == 0, err
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    state["model"]["mean"] += 1
    torch.save(state, run / "checkpoint.pt")
    code, _, err = cli("predict", "--run", run, "--images", image, "--engine", "onnx")
    assert code == 1 and "exported from another checkpoint" in one_line(err)
    # --model alone: the file says its threshold and scale
    code, _, err = cli("predict", "--model", run / "model.onnx", "--images", image, "--out", tmp_path / "alone")
    assert code == 0, err
    first = (tmp_path / "alone" / "predictions.csv").read_text().splitlines()[0]
    assert first.startswith("# score >=") and json.loads((run / "run.json").read_text())["calibration"]["rule"] in first


def test_a_missing_runtime_is_one_line_naming_the_extra(smoke_benchmark, tmp_path, monkeypatch):
    import cad_nb.export as export

    real = importlib.util.find_spec
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda n: None if n == "openvino" else real(n))
    code, _, err = cli("export", "--run", tmp_path, "--format", "openvino")
    assert code == 2 and one_line(err).endswith("--format openvino needs openvino: pip install 'cad_nb[deploy]'")
