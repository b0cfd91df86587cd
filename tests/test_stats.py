"Region statistics and Table 1 on known masks and on the benchmark."
import cv2
import numpy as np
import pytest
from scipy import ndimage

from cad_nb.stats import dataset_stats, min_area_rect, region_corners, region_stats, table1


def test_single_pixel_line_and_l_shape():
    m = np.zeros((20, 20), bool)
    m[2, 2] = True                          # single pixel: 1 x 1
    m[10, 3:15] = True                      # horizontal line: 12 x 1
    m[14:18, 15] = True; m[17, 15:19] = True  # L shape: 4 x 4 box
    df = region_stats(m).sort_values("area").reset_index(drop=True)
    assert df[["rect_width", "rect_height"]].round(9).values.tolist() == [[1, 1], [4, 4], [12, 1]]
    assert df.aspect_ratio.round(9).tolist() == [1, 1, 12]
    assert df.area.tolist() == [1, 7, 12]


def test_rotated_rectangle_recovered():
    m = np.zeros((200, 200), np.uint8)
    box = cv2.boxPoints(((100, 100), (120, 30), 30)).astype(np.int32)
    cv2.fillPoly(m, [box], 1)
    (row,) = region_stats(m).itertuples()
    assert row.rect_width == pytest.approx(121, abs=2.5) and row.rect_height == pytest.approx(31, abs=2.5)


@pytest.mark.parametrize("seed", range(5))
def test_rectangle_matches_opencv_on_random_regions(seed):
    rng = np.random.default_rng(seed)
    labels, n = ndimage.label(ndimage.gaussian_filter(rng.normal(size=(120, 120)), 4) > 0.1, np.ones((3, 3)))
    for k in range(1, n + 1):
        region = labels == k
        long_, short, _ = min_area_rect(region_corners(region))
        (_, _), (w, h), _ = cv2.minAreaRect(region_corners(region)[:, ::-1].astype(np.float32))
        assert long_ * short == pytest.approx(w * h, rel=1e-3)
        assert long_ == pytest.approx(max(w, h), rel=1e-3)


def test_table1_counts_match_the_folder(smoke_benchmark):
    images, regions = dataset_stats(smoke_benchmark, workers=2)
    t = table1(images)
    assert t.loc["Total", "train"] == (images.split == "train").sum()
    assert t.loc["Total", "test_all"] == t.loc["Total", "test_good"] + t.loc["Total", "test_defect"]
    assert len(regions) == images.n_regions.sum() and (regions.area_ratio > 0).all()
    single, parallel = dataset_stats(smoke_benchmark, workers=1)[1], regions
    assert np.allclose(single[["area", "aspect_ratio"]].values, parallel[["area", "aspect_ratio"]].values)
