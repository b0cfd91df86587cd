"The car multi-task benchmark and the COCO reader: determinism, label rules, bad input."
import filecmp, json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cad_nb.data import DatasetError, read_coco, CocoMultiTaskDataset, collate_multitask, decode_segmentation
from cad_nb.benchmark import make_car_benchmark, CAR_DOMAINS, CAR_SIZES, CAR_CLASSES


@pytest.fixture(scope="module")
def car(tmp_path_factory):
    return make_car_benchmark(tmp_path_factory.mktemp("car"), "smoke", seed=0)


def test_deterministic_and_cached(car, tmp_path):
    other = make_car_benchmark(tmp_path, "smoke", seed=0)
    files = sorted(p.relative_to(car) for p in car.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    assert all(filecmp.cmp(car / f, other / f, shallow=False) for f in files)
    assert make_car_benchmark(car.parent, "smoke", seed=0) == car
    assert not list(car.parent.glob(".car_*tmp*"))                 # no temporary folder left


def test_reader_on_benchmark(car):
    cs = read_coco(car / "annotations/train.json")
    assert cs.class_names == ["good", *CAR_CLASSES] and cs.domains == sorted(CAR_DOMAINS)
    assert len(cs.samples) == 7 * CAR_SIZES["smoke"]["train"]
    ds = CocoMultiTaskDataset(cs.samples, 64)
    for i, s in enumerate(cs.samples):
        if not s.classes: assert s.label == 0; continue
        x = ds[i]
        assert x["label"] == s.classes[int(np.argmax(s.areas))]           # largest annotation's class
        assert set(x["mask"].unique().tolist()) - {0} <= set(s.classes)
        assert (x["boxes"][:, 2:] > x["boxes"][:, :2]).all() and x["boxes"].max() <= 64


def test_masks_match_boxes(car):
    coco = json.loads((car / "annotations/val.json").read_text()); ims = {i["id"]: i for i in coco["images"]}
    for a in coco["annotations"]:
        im = ims[a["image_id"]]; m = decode_segmentation(a["segmentation"], im["height"], im["width"])
        ys, xs = np.nonzero(m); x, y, w, h = a["bbox"]
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h) and m.sum() == a["area"]


def _coco(tmp_path, **edits):
    (tmp_path / "images").mkdir(exist_ok=True); (tmp_path / "annotations").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "images/a.png")
    coco = dict(images=[dict(id=1, file_name="a.png", height=10, width=12)], categories=[dict(id=1, name="dent")],
                annotations=[dict(id=5, image_id=1, category_id=1, bbox=[1, 1, 4, 4], segmentation=[[1, 1, 5, 1, 5, 5, 1, 5]])])
    for k, fn in edits.items(): fn(coco)
    p = tmp_path / "annotations/train.json"; p.write_text(json.dumps(coco)); return p


@pytest.mark.parametrize("edit,msg", [
    (lambda c: c["annotations"][0].update(image_id=9), "unknown image 9 (annotation id 5"),
    (lambda c: c["annotations"][0].update(category_id=2), "unknown category 2 (annotation id 5"),
    (lambda c: c["annotations"][0].update(bbox=[10, 1, 4, 4]), "outside"),
    (lambda c: c["annotations"][0].update(bbox=[1, 1, 0, 4]), "annotation id 5"),
    (lambda c: c["annotations"][0].update(segmentation=[[1, 1, 2, 2]]), "empty polygon (annotation id 5"),
    (lambda c: c["images"][0].update(file_name="missing.png"), "image file missing"),
    (lambda c: c["images"][0].update(height=11), "says 11x12"),
])
def test_bad_input(tmp_path, edit, msg):
    with pytest.raises(DatasetError, match=msg.replace("(", r"\(")): read_coco(_coco(tmp_path, e=edit))


def test_corrupt_image_and_json(tmp_path):
    p = _coco(tmp_path); (tmp_path / "images/a.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="a.png"): read_coco(p)
    p.write_text("[1, 2"); 
    with pytest.raises(DatasetError, match="unreadable COCO JSON"): read_coco(p)
    with pytest.raises(DatasetError, match="annotation file not found"): read_coco(tmp_path / "nope.json")


def test_collate_polygon(tmp_path):
    ds = CocoMultiTaskDataset(read_coco(_coco(tmp_path)).samples, 24)
    b = collate_multitask([ds[0], ds[0]])
    assert b["image"].shape == (2, 3, 24, 24) and b["label"].tolist() == [1, 1] and b["mask"][0].sum() > 0
    torch.testing.assert_close(b["boxes"][0], torch.tensor([[2., 2.4, 10., 12.]]))
