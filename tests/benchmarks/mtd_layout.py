"""Magnetic Tile Defects (Huang, Qiu, Yuan, The Visual Computer 2020) in the layout `cad_nb.data` reads, DifferNet's split.

A development helper for measuring the methods on real defects (issue 16), until the library's own converter
(`cad-nb data get mtd`) exists: images are linked, not copied; masks are binarised with > 127 (MTD's are resampled,
values 0-255) and written as 0/255 PNGs. Train: the 761 defect-free images of `differnet_train_filenames.txt`; test:
the other 191 defect-free images and all 392 defective ones (Blowhole, Break, Crack, Fray, Uneven).

    python tests/benchmarks/mtd_layout.py ../shared/datasets/magnetic_tile /tmp/mtd     # -> /tmp/mtd/MTD/...
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def convert(src, out, category="MTD") -> Path:
    src, cdir = Path(src), Path(out) / category
    train = set((src / "differnet_train_filenames.txt").read_text().split())
    if len(train) != 761: raise SystemExit(f"{src}/differnet_train_filenames.txt lists {len(train)} files, not 761")
    counts = {}
    for folder in sorted(src.glob("MT_*")):
        kind = folder.name[3:]
        for img in sorted((folder / "Imgs").glob("*.jpg")):
            if kind == "Free": dest = cdir / ("train" if img.name in train else "test") / "good" / img.name
            else:
                dest = cdir / "test" / kind / img.name
                mask = np.asarray(Image.open(img.with_suffix(".png")).convert("L")) > 127
                (cdir / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(cdir / "ground_truth" / kind / f"{img.stem}.png")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists(): dest.symlink_to(img.resolve())
            counts[dest.parent.relative_to(cdir).as_posix()] = counts.get(dest.parent.relative_to(cdir).as_posix(), 0) + 1
    if counts.get("train/good") != 761 or counts.get("test/good") != 191:
        raise SystemExit(f"unexpected counts {counts}: is {src} the MTD folder?")
    print(cdir, counts)
    return cdir


if __name__ == "__main__":
    convert(*sys.argv[1:3])
