"Public datasets by name: the converters on real files, every bad input, and `cad-nb data get` on the real folders."
import contextlib, dataclasses, io, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cad_nb import public
from cad_nb.data import DatasetError, check_dataset, load_mask, read_category, read_coco

FIXTURES = Path(__file__).parent / "data" / "real"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CAD_NB = str(Path(sys.executable).with_name("cad-nb"))
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"the real datasets are not at {SHARED}")


def cli(*args, cwd=None):
    "`cad-nb ARGS` in a fresh process: (exit code, stdout, stderr)."
    r = subprocess.run([CAD_NB, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return r.returncode, r.stdout, r.stderr


def incli(*args):
    "`cad-nb ARGS` in this process (so a patched registry applies): (exit code, stdout, stderr)."
    from cad_nb.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def mtd_raw(tmp_path):
    "The fixture's MTD files in the raw layout, with a training list naming two of the four defect-free images."
    raw = tmp_path / "raw_mtd"
    shutil.copytree(FIXTURES / "magnetic_tile", raw)
    free = sorted(p.name for p in (raw / "MT_Free/Imgs").glob("*.jpg"))
    (raw / public.MTD_TRAIN_LIST).write_text("\n".join(free[:2]) + "\n")
    return raw


@pytest.fixture
def any_counts(monkeypatch):
    "Registry entries that accept a copy of any size (the real counts are tested on the real folders)."
    for name in ("mtd", "car_damage"):
        spec = public.REGISTRY[name]
        counted = lambda root, spec=spec: {"checked": spec.find(root).name}
        monkeypatch.setitem(public.REGISTRY, name, dataclasses.replace(spec, check=counted))


def test_mtd_converter_binarises_masks_and_keeps_grayscale(mtd_raw, tmp_path):
    mask = next((mtd_raw / "MT_Crack/Imgs").glob("*.png"))
    assert len(np.unique(np.asarray(Image.open(mask)))) > 2                      # resampled, values 0-255
    counts = public.convert_mtd(mtd_raw, tmp_path / "out")
    assert counts == {"train/good": 2, "test/good": 2, "test/Crack": 1, "test/Blowhole": 1}
    out = tmp_path / "out/MTD"
    written = np.asarray(Image.open(out / f"ground_truth/Crack/{mask.stem}_mask.png"))
    assert set(np.unique(written)) == {0, 255}
    assert (written > 0).sum() == (np.asarray(Image.open(mask).convert("L")) > public.MTD_MASK_THRESHOLD).sum()
    assert Image.open(out / "test/Crack" / f"{mask.stem}.jpg").mode == "L"        # copied unchanged
    assert check_dataset(tmp_path / "out") == []
    assert {s.split for s in read_category(tmp_path / "out", "MTD")} == {"train", "test"}


def test_check_dataset_names_the_fix_for_raw_data(mtd_raw, tmp_path):
    problems = check_dataset(mtd_raw)
    assert len(problems) == 1 and "cad-nb data get mtd" in problems[0]
    cdir = tmp_path / "mvtec/Tile"                                                 # MVTec layout, raw MTD mask
    (cdir / "train/good").mkdir(parents=True); (cdir / "test/crack").mkdir(parents=True); (cdir / "ground_truth/crack").mkdir(parents=True)
    img = next((mtd_raw / "MT_Crack/Imgs").glob("*.jpg"))
    shutil.copy(img, cdir / "test/crack/a.jpg"); shutil.copy(img.with_suffix(".png"), cdir / "ground_truth/crack/a_mask.png")
    shutil.copy(next((mtd_raw / "MT_Free/Imgs").glob("*.jpg")), cdir / "train/good/b.jpg")
    problems = check_dataset(tmp_path / "mvtec")
    assert len(problems) == 1 and "a_mask.png has values" in problems[0] and "binarise it, e.g. value > 127" in problems[0]
    with pytest.raises(DatasetError, match="binarise"):
        load_mask(cdir / "ground_truth/crack/a_mask.png")


def test_car_converter_polygons_boxes_and_labels(tmp_path):
    raw = tmp_path / "car"
    shutil.copytree(FIXTURES / "car_damage", raw)
    for split in ("valid", "test"): shutil.copytree(raw / "train", raw / split)
    assert public.convert_car_damage(raw, tmp_path / "out") == dict(train=2, val=2, test=2)
    assert public.verify_coco_folder(tmp_path / "out") == []
    cs = read_coco(tmp_path / "out/annotations/train.json")
    assert cs.class_names == ["good", "Bonnet", "Bumper", "Dickey", "Door", "Fender", "Light", "Windshield"]
    lines = {p.stem: [l.split() for l in p.read_text().splitlines() if l.strip()] for p in (raw / "train/labels").glob("*.txt")}
    for s in cs.samples:
        yolo = lines[s.image_path.stem]
        assert [c - 1 for c in s.classes] == [int(l[0]) for l in yolo]              # one annotation per line, in order
        assert s.label == s.classes[int(np.argmax(s.areas))]                       # the largest region's class
    import json
    coco = json.loads((tmp_path / "out/annotations/train.json").read_text())
    assert sum(a["from_box"] for a in coco["annotations"]) == sum(len(l) == 5 for ls in lines.values() for l in ls) > 0


@pytest.mark.parametrize("line,message", [
    ("2 0.1 0.1 0.5 0.1 0.5", "5 coordinates; a box has 4"),
    ("7 0.1 0.1 0.5 0.5", "class 7 outside data.yaml's 7 classes"),
    ("one 0.1 0.1 0.5 0.5", "not numbers"),
    ("1 0.1 nan 0.5 0.5", "not finite"),
])
def test_bad_yolo_lines_are_named_with_file_and_line(tmp_path, line, message, any_counts):
    raw = tmp_path / "car"
    shutil.copytree(FIXTURES / "car_damage", raw)
    for split in ("valid", "test"): shutil.copytree(raw / "train", raw / split)
    label = sorted((raw / "valid/labels").glob("*.txt"))[0]
    label.write_text(label.read_text().rstrip("\n") + "\n" + line + "\n")
    n = len(label.read_text().splitlines())
    code, out, err = incli("data", "get", "car_damage", "--from", raw, "--out", tmp_path / "o")
    assert code == 1 and f"{label}:{n}: " in err and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o/car_damage").exists() and not (tmp_path / "o/.car_damage.partial").exists()


def test_missing_image_or_mask_is_named(mtd_raw, tmp_path):
    mask = next((mtd_raw / "MT_Crack/Imgs").glob("*.png"))
    mask.unlink()
    with pytest.raises(DatasetError, match=f"{mask.stem}.jpg has no mask"):
        public.check_mtd(mtd_raw)
    shutil.copy(next((mtd_raw / "MT_Blowhole/Imgs").glob("*.png")), mtd_raw / "MT_Blowhole/Imgs/orphan.png")
    with pytest.raises(DatasetError, match="orphan.png has no image"):
        public._mtd_pairs(mtd_raw, "Blowhole")
    car = tmp_path / "car"; shutil.copytree(FIXTURES / "car_damage", car)
    next((car / "train/labels").glob("*.txt")).unlink()
    with pytest.raises(DatasetError, match="has no label file beside it in train/"):
        public.check_car_damage(car)


def test_unreadable_image_leaves_nothing_that_looks_complete(mtd_raw, tmp_path, any_counts):
    (next((mtd_raw / "MT_Free/Imgs").glob("*.jpg"))).write_bytes(b"not a jpeg")
    code, out, err = incli("data", "get", "mtd", "--from", mtd_raw, "--out", tmp_path / "o")
    assert code == 1 and "unreadable or corrupt image" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == []


def test_wrong_folder_partial_copy_and_rerun(mtd_raw, tmp_path):
    code, _, err = cli("data", "get", "mtd", "--from", FIXTURES / "car_damage", "--out", tmp_path / "o")
    assert code == 1 and "is not Magnetic Tile Defects" in err
    code, _, err = cli("data", "get", "mtd", "--from", mtd_raw, "--out", tmp_path / "o")      # the real counts
    assert code == 1 and "is not a complete copy: Free: 4 (expected 952)" in err and "train_list: 2 (expected 761)" in err
    (mtd_raw / public.MTD_TRAIN_LIST).write_text("nope.jpg\n")
    code, _, err = cli("data", "get", "mtd", "--from", mtd_raw, "--out", tmp_path / "o")
    assert code == 1 and "names 1 images not in MT_Free/Imgs" in err
    (tmp_path / "o/mtd").mkdir(parents=True)
    code, _, err = cli("data", "get", "mtd", "--from", mtd_raw, "--out", tmp_path / "o")
    assert code == 1 and "exists but holds no complete copy" in err


def test_fetch_from_a_local_repository_then_idempotent(mtd_raw, tmp_path, any_counts):
    listed = tmp_path / "differnet_list.txt"; os.replace(mtd_raw / public.MTD_TRAIN_LIST, listed)
    git = lambda *a: subprocess.run(["git", "-C", str(mtd_raw), *a], check=True, capture_output=True)
    git("init", "-q"); git("add", "-A"); git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "copy")
    args = ["data", "get", "mtd", "--out", tmp_path / "o", "--url", mtd_raw.as_uri(), "--url", listed.as_uri()]
    code, out, err = incli(*args)
    assert code == 0, err
    assert "-> " in out and "Huang" in out and "use: cad-nb train --method cfrg" in out
    assert check_dataset(tmp_path / "o/mtd") == [] and (tmp_path / "o/.download/mtd/.git").is_dir()
    code, out, _ = incli(*args)
    assert code == 0 and "already prepared" in out
    code, _, err = incli("data", "get", "mtd", "--out", tmp_path / "o2", "--url", (tmp_path / "nowhere").as_uri(), "--url", listed.as_uri())
    assert code == 1 and "git clone" in err and not (tmp_path / "o2/mtd").exists()


@needs_shared
def test_real_mtd_from_the_shared_copy(tmp_path):
    code, out, err = cli("data", "get", "mtd", "--from", SHARED / "magnetic_tile", "--out", tmp_path)
    assert code == 0, err
    samples = read_category(tmp_path / "mtd", "MTD")
    train = [s for s in samples if s.split == "train"]
    good = [s for s in samples if s.split == "test" and not s.label]
    bad = [s for s in samples if s.label]
    assert (len(train), len(good), len(bad)) == (761, 191, 392)


@needs_shared
def test_real_data_notebooks_run_in_smoke_and_skip_without_data(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    for name, folder in [("mtd", "magnetic_tile"), ("car_damage", "car_damage"), ("dtd", "dtd_subset")]:
        assert cli("data", "get", name, "--from", SHARED / folder, "--out", tmp_path / "real")[0] == 0
    out = tmp_path / "figs"
    code, stdout, err = cli("reproduce", "--profile", "smoke", "--only", "22_real_mtd", "32_mtl_real_car", "--real-data",
                            tmp_path / "real", "--out", out, cwd=repo)
    assert code == 0, stdout + err
    assert (out / "mtd_results.csv").is_file() and (out / "car_mtl_summary.csv").is_file()
    code, stdout, _ = cli("reproduce", "--profile", "smoke", "--only", "22_real_mtd", "--out", tmp_path / "figs2", cwd=repo)
    assert code == 0 and "22_real_mtd: skipped, no prepared mtd: run `cad-nb data get mtd --out DIR`" in stdout
