"Readers of the 3CAD and MVTec AD layouts, the dataset check, resizing and every kind of bad input."
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cad_nb.data import (MASK_RESIZE, AnomalyDataset, DatasetError, check_dataset, detect_layout, list_categories,
                         load_image, load_mask, read_category, resize_mask)


def copy_category(src_root, dst_root, category, layout):
    "Copy one category of the benchmark, renaming masks to the MVTec convention when asked."
    dst = dst_root / category
    shutil.copytree(src_root / category, dst)
    if layout == "mvtec":
        for m in list((dst / "ground_truth").rglob("*.png")): m.rename(m.with_name(m.stem + "_mask.png"))
    return dst


@pytest.mark.parametrize("layout", ["3cad", "mvtec"])
def test_both_layouts_read_the_same_samples(smoke_benchmark, tmp_path, layout):
    cat = list_categories(smoke_benchmark)[0]
    copy_category(smoke_benchmark, tmp_path, cat, layout)
    assert detect_layout(tmp_path / cat) == layout
    ref, got = read_category(smoke_benchmark, cat), read_category(tmp_path, cat)
    assert [(s.split, s.label, s.defect_types) for s in got] == [(s.split, s.label, s.defect_types) for s in ref]
    assert all(s.mask_path.name.endswith("_mask.png") == (layout == "mvtec") for s in got if s.label)
    assert check_dataset(tmp_path) == []


def test_samples_labels_and_multi_type_images(smoke_benchmark):
    samples = [s for c in list_categories(smoke_benchmark) for s in read_category(smoke_benchmark, c)]
    assert {s.split for s in samples} == {"train", "test"}
    assert all(s.label == 0 and s.mask_path is None for s in samples if s.split == "train")
    assert any(len(s.defect_types) > 1 for s in samples)          # types beyond the folder's, from defect_types.json


def test_dataset_tensors(smoke_benchmark):
    samples = read_category(smoke_benchmark, list_categories(smoke_benchmark)[0])
    ds = AnomalyDataset(samples, image_size=48)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))
    assert batch["image"].shape == (len(ds), 3, 48, 48) and batch["mask"].shape == (len(ds), 1, 48, 48)
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    has_defect = batch["mask"].flatten(1).amax(1)
    assert torch.equal(has_defect, batch["label"].float())         # every defective image keeps a defect at 48 px


@pytest.mark.parametrize("src,dst", [(1024, 256), (1000, 333), (97, 31), (512, 64)])
def test_resize_keeps_every_tiny_defect(src, dst):
    rng = np.random.default_rng(src)
    for _ in range(20):
        m = np.zeros((src, src), bool)
        y, x = rng.integers(0, src - 2, 2)
        m[y, x:x + 2] = True                                      # a 2-pixel defect anywhere
        assert resize_mask(m, dst).sum() >= 1


def test_nearest_release_rule_can_lose_a_tiny_defect():
    tiny = np.zeros((16, 16), bool); tiny[1, 1] = True            # nearest at 4x reads pixels 2, 6, 10, 14 per axis
    assert resize_mask(tiny, 4).sum() == 1
    assert resize_mask(tiny, 4, mode="nearest").sum() == 0
    blob = np.zeros((64, 64), bool); blob[13:50, 13:50] = True
    any_overlap, nearest = resize_mask(blob, 16), resize_mask(blob, 16, mode="nearest")
    assert any_overlap[4:12, 4:12].all() and nearest[4:12, 4:12].all()
    with pytest.raises(ValueError, match=r"unknown mode 'area' for resize_mask; choose one of \('any-overlap', 'nearest'\)"):
        resize_mask(tiny, 4, mode="area")


@pytest.mark.parametrize("src,dst", [(1024, 256), (1000, 333), (97, 31), (64, 128)])
def test_nearest_marks_no_pixel_that_any_overlap_leaves_out(src, dst):
    rng = np.random.default_rng(src)
    for _ in range(10):
        m = rng.random((src, src)) < 0.01
        nearest, any_overlap = resize_mask(m, dst, mode="nearest"), resize_mask(m, dst)
        assert nearest.dtype == bool and nearest.shape == (dst, dst)
        assert not (nearest & ~any_overlap).any()
        if dst > src: np.testing.assert_array_equal(nearest, any_overlap)      # upsampling: the same rule


def test_dataset_passes_mask_resize_on(tmp_path):
    c = tmp_path / "Widget"
    for sub in ("train/good", "test/dent", "ground_truth/dent"): (c / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(c / "train/good/000.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(c / "test/dent/000.png")
    mask = np.zeros((16, 16), np.uint8); mask[1, 1] = 255
    Image.fromarray(mask).save(c / "ground_truth/dent/000.png")
    samples = read_category(tmp_path, "Widget")
    assert AnomalyDataset(samples, 4)[1]["mask"].sum() == 1
    assert AnomalyDataset(samples, 4, mask_resize="any-overlap")[1]["mask"].sum() == 1
    assert AnomalyDataset(samples, 4, mask_resize="nearest")[1]["mask"].sum() == 0
    assert MASK_RESIZE == ("any-overlap", "nearest")
    with pytest.raises(ValueError, match="unknown mask_resize 'box'"): AnomalyDataset(samples, 4, mask_resize="box")


def test_mask_values_0_1_and_0_255_both_accepted(tmp_path):
    for values, name in [((0, 1), "a.png"), ((0, 255), "b.png")]:
        arr = np.zeros((6, 6), np.uint8); arr[2:4, 2:4] = values[1]
        Image.fromarray(arr).save(tmp_path / name)
        assert load_mask(tmp_path / name).sum() == 4


# --- bad input: every error names the file --------------------------------------------------------

@pytest.fixture
def broken_copy(smoke_benchmark, tmp_path):
    "A writable copy of one category, to break in the tests below."
    cat = list_categories(smoke_benchmark)[0]
    copy_category(smoke_benchmark, tmp_path, cat, "3cad")
    defective = next(s for s in read_category(tmp_path, cat) if s.label)
    return tmp_path, cat, defective


def test_corrupt_image(broken_copy):
    root, cat, s = broken_copy
    s.image_path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    problems = check_dataset(root)
    assert len(problems) == 1 and "corrupt image" in problems[0] and s.image_path.name in problems[0]
    with pytest.raises(DatasetError, match=s.image_path.name):
        AnomalyDataset([s], 32)[0]


def test_missing_mask(broken_copy):
    root, cat, s = broken_copy
    s.mask_path.unlink()
    with pytest.raises(DatasetError, match=f"missing mask for defective image .*{s.image_path.name}"):
        read_category(root, cat)
    assert any("missing mask" in p for p in check_dataset(root))


def test_mask_size_differs(broken_copy):
    root, cat, s = broken_copy
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(s.mask_path)
    with pytest.raises(DatasetError, match=r"is 7x9 \(HxW\) but its image is"):
        AnomalyDataset([s], 32)[0]
    assert any(s.mask_path.name in p and "7x9" in p for p in check_dataset(root))


def test_mask_with_other_values(broken_copy):
    root, cat, s = broken_copy
    with Image.open(s.image_path) as im: w, h = im.size
    arr = np.zeros((h, w), np.uint8); arr[0, 0] = 128; arr[1, 1] = 255
    Image.fromarray(arr).save(s.mask_path)
    with pytest.raises(DatasetError, match=r"has values \[0, 128, 255\]; expected only 0/1 or 0/255"):
        load_mask(s.mask_path)


def test_empty_unknown_and_unrecognised(tmp_path):
    with pytest.raises(DatasetError, match="no categories"):
        list_categories(tmp_path)
    (tmp_path / "Empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="empty category"):
        read_category(tmp_path, "Empty")
    with pytest.raises(DatasetError, match="unknown category 'Nope'.*Empty"):
        read_category(tmp_path, "Nope")
    (tmp_path / "Flat").mkdir()
    with pytest.raises(DatasetError, match="layout not recognised"):
        detect_layout(tmp_path / "Flat")


def test_check_dataset_reports_all_problems_at_once(broken_copy):
    root, cat, s = broken_copy
    others = [x for x in read_category(root, cat) if x.label and x != s]
    s.image_path.write_bytes(b"junk")
    others[0].mask_path.unlink()
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(others[1].mask_path)
    problems = check_dataset(root)
    assert len(problems) == 3
    assert {"corrupt image", "missing mask", "3x3"} == {k for k in ("corrupt image", "missing mask", "3x3") if any(k in p for p in problems)}


def test_16_bit_grey_images_are_read_not_clipped_to_white(tmp_path):
    "Two different 16-bit tiles were once both read as all white: a false 'leakage' and metrics at 0.5."
    cdir = tmp_path / "Tile"
    for split, seed in (("train", 0), ("test", 1)):
        (cdir / split / "good").mkdir(parents=True)
        tile = np.random.default_rng(seed).integers(0, 65536, (24, 24)).astype(np.uint16)
        Image.fromarray(tile).save(cdir / split / "good" / "a.png")
    assert check_dataset(tmp_path) == []                                     # no pixel-identical pair
    train = load_image(cdir / "train/good/a.png")
    assert 100 < train.mean() < 155 and train.std() > 50                     # a uniform draw over 16 bits, scaled
