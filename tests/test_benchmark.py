"The embedded benchmark: determinism, caching, and the properties the issue asks of it."
import filecmp
import time

import numpy as np
import pandas as pd

from cad_nb.data import check_dataset, image_size, list_categories, read_category
from cad_nb.benchmark import CATEGORIES, DEFECTS, make_3c_benchmark


def files_of(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_byte_identical_with_any_worker_count(smoke_benchmark, tmp_path):
    other = make_3c_benchmark(tmp_path, "smoke", seed=0, workers=2)
    assert files_of(other) == files_of(smoke_benchmark)
    assert all(filecmp.cmp(other / f, smoke_benchmark / f, shallow=False) for f in files_of(other))


def test_second_call_reuses_the_cache(smoke_benchmark):
    before = {f: (smoke_benchmark / f).stat().st_mtime_ns for f in files_of(smoke_benchmark)}
    t0 = time.time()
    assert make_3c_benchmark(smoke_benchmark.parent, "smoke", seed=0) == smoke_benchmark
    assert time.time() - t0 < 0.5
    assert before == {f: (smoke_benchmark / f).stat().st_mtime_ns for f in files_of(smoke_benchmark)}


def test_smoke_generates_fast_on_one_core(tmp_path):
    t0 = time.time()
    make_3c_benchmark(tmp_path, "smoke", seed=5, workers=1)
    assert time.time() - t0 < 30


def test_benchmark_content(smoke_benchmark):
    assert check_dataset(smoke_benchmark) == []
    cats = list_categories(smoke_benchmark)
    assert len(cats) >= 6 and {"Brick", "Gravel"} <= set(cats)       # two cut from scikit-image photographs
    samples = pd.DataFrame([dict(cat=s.category, label=s.label, n_types=len(s.defect_types),
                                 hw=image_size(s.image_path), types=s.defect_types)
                            for c in cats for s in read_category(smoke_benchmark, c)])
    assert len({t for ts in samples.types for t in ts}) >= 6            # at least 6 test defect types
    assert samples.n_types.max() >= 2                                    # several types in one image
    assert samples.hw.nunique() > 10                                     # image sizes vary
    assert len(DEFECTS) >= 6 and len(CATEGORIES) == len(cats)
