"Adding a method is one registration: a tiny method registered here goes through `cad-nb train / test / predict`."
import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from cad_nb.cli import main
from cad_nb.data import list_categories
from cad_nb.registry import REGISTRY, get_method, register_method
from cad_nb.runner import train_method
from cad_nb.settings import SECTIONS, load_profile
from cad_nb.train import fit


@dataclass(frozen=True)
class TinySettings:
    "The tiny method's settings: its own budget and learning rate."
    epochs: int = 2
    lr: float = 0.1


class Tiny(nn.Module):
    "A map that is the distance of each pixel's grey level from a learnt one: enough to be trained, scored and saved."
    def __init__(self):
        super().__init__()
        self.level = nn.Parameter(torch.zeros(1))

    def predict(self, images):
        maps = (images.mean(1) - self.level).abs()
        return maps, maps.flatten(1).amax(1)


def tiny_step(net, batch, device):
    "Learn the training images' mean grey level."
    return {"loss": ((batch["image"].to(device).mean() - net.level) ** 2).sum()}


def train_tiny(model, cfg, train_set, epochs=None, **run):
    return fit(model, tiny_step, train_set, epochs=epochs or cfg.tiny.epochs, batch_size=4, lr=cfg.tiny.lr, **run)


@pytest.fixture
def tiny():
    method = register_method("Tiny", TinySettings, build=lambda cfg, teacher: Tiny(), train=train_tiny,
                             budget=lambda cfg: (cfg.tiny.epochs, "epochs"), uses=("data",))
    yield method
    del REGISTRY["tiny"], SECTIONS["tiny"]


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_a_registered_method_trains_tests_and_predicts(tiny, smoke_benchmark, tmp_path):
    torch.set_num_threads(1)
    category, run = list_categories(smoke_benchmark)[0], tmp_path / "tiny"
    common = ["--profile", "smoke", "--set", "teacher.pretrained=false", "--quiet"]
    code, out, err = cli("train", "--method", "tiny", "--data-root", smoke_benchmark, "--category", category,
                         "--out", run, *common, "--set", "tiny.epochs=3")
    assert code == 0, err
    record = json.loads((run / "run.json").read_text())
    assert record["method"] == "Tiny" and record["status"] == "complete" and record["settings"]["tiny.epochs"] == 3
    assert len(pd.read_csv(run / "history.csv")) == 3
    code, out, err = cli("test", "--run", run)
    assert code == 0, err
    assert set(json.loads((run / "metrics.json").read_text())["metrics"]) >= {"i_auroc", "p_auroc", "aupro"}
    images = smoke_benchmark / category / "test"
    code, out, err = cli("predict", "--run", run, "--images", images, "--out", tmp_path / "pred")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "pred" / "predictions.csv", skiprows=1)
    assert len(table) == len(list(images.rglob("*.png"))) and table.score.notna().all()
    code, out, err = cli("train", "--method", "tiny", "--data-root", smoke_benchmark, "--category", category,
                         "--out", run, *common, "--set", "tiny.epochs=4")
    assert code == 2 and "tiny.epochs: 3 there, 4 here" in err


def test_print_config_shows_the_sections_a_run_reads(tiny, smoke_benchmark):
    code, out, err = cli("train", "--method", "tiny", "--data-root", smoke_benchmark, "--category", "x",
                         "--profile", "smoke", "--set", "tiny.lr=0.5", "--print-config")
    assert code == 0, err
    assert "tiny.lr = 0.5  # --set" in out and "tiny.epochs = 2  # default" in out and "data.image_size = 64" in out
    assert "rd.epochs" not in out and "runtime.seed" in out


def test_the_registry_knows_the_builtin_methods_and_names_the_others():
    assert [m.name for m in REGISTRY.values()][:9] == [
        "CFRG", "RD", "PaDiM", "DeSTSeg", "SimpleNet", "DRAEM", "RD++", "FastFlow", "mtl"
    ]
    assert get_method("rd").identity() == ("rd", "data", "teacher", "maps", "runtime.seed")
    with pytest.raises(ValueError, match="unknown method 'nope'; registered: CFRG, RD"):
        get_method("nope")


def test_a_method_budget_is_its_own_setting(smoke_benchmark):
    "`rd.epochs` trains RD, `cfrg.epochs` CFRG: one setting is never read by two methods."
    from cad_nb.runner import category_datasets, make_teacher
    cfg = load_profile("smoke", sets={"teacher.pretrained": False, "rd.epochs": 2, "cfrg.epochs": 1})
    train, _ = category_datasets(smoke_benchmark, list_categories(smoke_benchmark)[0], 64, max_train=8)
    _, history = train_method("RD", cfg, train, make_teacher(cfg), progress=False)
    assert len(history["epoch"]) == 2
