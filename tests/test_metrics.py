"Correctness of cad_nb.metrics against scikit-learn and against the definitions written out plainly."
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, roc_auc_score
from skimage import measure

from cad_nb.metrics import (METRIC_NAMES, MetricAccumulator, MetricError, aupro, evaluate, image_auroc,
                            pixel_ap, pixel_auroc, pro_3cad, release_pro_of_image)


def make_category(rng, n=16, shape=(20, 28), decimals=1, good_share=0.3):
    "Masks with random rectangles and single pixels (some images good) and maps rounded so that classes tie."
    masks = np.zeros((n, *shape), bool)
    for i in range(n):
        if rng.random() < good_share: continue
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
            h, w = rng.integers(1, 6, 2)
            masks[i, y:y + h, x:x + w] = True
        if not masks[i].any() or rng.random() < 0.5: masks[i, rng.integers(shape[0]), rng.integers(shape[1])] = True
    maps = rng.random(masks.shape) + 0.4 * masks * rng.random((n, 1, 1))
    return masks, maps.round(decimals).astype(np.float32) if decimals is not None else maps.astype(np.float32)


def aupro_by_thresholds(masks, maps, fpr_limit=0.3):
    "MVTec AUPRO from its definition: every distinct threshold, each region's overlap counted directly."
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        fprs.append((above & ~masks).sum() / (~masks).sum())
        pros.append(np.mean([above[i][r].mean() for i, r in regions]))
    fprs.append(1.0); pros.append(1.0)
    area = 0.0
    for x0, x1, y0, y1 in zip(fprs[:-1], fprs[1:], pros[:-1], pros[1:]):
        if x0 >= fpr_limit: break
        if x1 > fpr_limit: y1, x1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0), fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def release_pro_loop(amap, mask):
    "The 3CAD release's per-image PRO as it is written there (200 thresholds, regionprops, sklearn auc)."
    lo, hi = amap.min(), amap.max(); rows = []
    for th in np.arange(lo, hi, (hi - lo) / 200):
        binary = amap > th
        pros = [binary[r.coords[:, 0], r.coords[:, 1]].sum() / r.area for r in measure.regionprops(measure.label(mask))]
        rows.append((np.logical_and(~mask, binary).sum() / (~mask).sum(), np.mean(pros)))
    fpr, pro = np.array(rows).T
    keep = fpr < 0.3
    return auc(fpr[keep] / fpr[keep].max(), pro[keep])


@pytest.mark.parametrize("decimals", [1, 2, None])
@pytest.mark.parametrize("seed", range(4))
def test_pooled_metrics_equal_sklearn(seed, decimals):
    masks, maps = make_category(np.random.default_rng(seed), decimals=decimals)
    r = evaluate(masks, maps)
    assert set(r) == set(METRIC_NAMES)
    assert abs(r["p_auroc"] - roc_auc_score(masks.ravel(), maps.ravel())) < 1e-12
    assert abs(r["p_ap"] - average_precision_score(masks.ravel(), maps.ravel())) < 1e-12
    assert abs(r["i_auroc"] - roc_auc_score(masks.any((1, 2)), maps.max((1, 2)))) < 1e-12
    assert r["p_auroc"] == pixel_auroc(masks, maps) and r["p_ap"] == pixel_ap(masks, maps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_image_auroc_with_ties_equals_sklearn(dtype):
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = rng.integers(2, 60)
        labels = rng.random(n) < 0.4
        labels[:2] = [False, True]
        scores = rng.integers(0, 5, n).astype(dtype)
        assert abs(image_auroc(labels, scores) - roc_auc_score(labels, scores)) < 1e-12
        assert abs(image_auroc(torch.from_numpy(labels), torch.from_numpy(scores)) - roc_auc_score(labels, scores)) < 1e-12


def test_float64_maps_stay_exact():
    rng = np.random.default_rng(3)
    masks, _ = make_category(rng)
    maps = 0.5 + 1e-12 * rng.integers(0, 4, masks.shape) + 1e-12 * masks    # differences float32 cannot hold
    assert abs(pixel_auroc(masks, maps) - roc_auc_score(masks.ravel(), maps.ravel())) < 1e-12
    assert pixel_auroc(masks, maps) > 0.6


@pytest.mark.parametrize("fpr_limit", [0.3, 0.01, 0.5, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_aupro_equals_threshold_by_threshold_definition(seed, fpr_limit):
    masks, maps = make_category(np.random.default_rng(100 + seed), n=8, shape=(16, 18), decimals=2)
    assert abs(aupro(masks, maps, fpr_limit) - aupro_by_thresholds(masks, maps, fpr_limit)) < 1e-6


def test_aupro_continuous_scores_and_torch_input():
    masks, maps = make_category(np.random.default_rng(11), n=6, shape=(14, 14), decimals=None)
    expected = aupro_by_thresholds(masks, maps)
    assert abs(aupro(torch.from_numpy(masks[:, None]), torch.from_numpy(maps[:, None])) - expected) < 1e-6


def test_pro_3cad_equals_release_loop():
    rng = np.random.default_rng(5)
    masks, maps = make_category(rng, n=10, shape=(24, 24), decimals=None)
    per_image = [release_pro_loop(maps[i].astype(np.float64), masks[i]) for i in range(len(masks)) if masks[i].any()]
    assert abs(pro_3cad(masks, maps.astype(np.float64)) - np.mean(per_image)) < 1e-9
    assert abs(evaluate(masks, maps.astype(np.float64))["pro_3cad"] - np.mean(per_image)) < 1e-9


def test_pro_3cad_degenerate_images_have_documented_values():
    mask = np.zeros((10, 10), bool); mask[2:5, 2:5] = True
    assert release_pro_of_image(np.full((10, 10), 0.7), mask) == 0.0                 # constant map
    assert release_pro_of_image(mask.astype(float), mask) == 1.0                     # perfect separation
    assert release_pro_of_image(1.0 - mask, mask) == 0.0                             # inverted
    two_level = np.where(mask, 1.0, 0.0); two_level[:, 7:] = 1.0                      # 30 of 91 normal pixels at the max
    assert release_pro_of_image(two_level, mask) == 0.0                              # no point with FPR < 0.3
    with pytest.raises(MetricError, match="needs a defective image"): release_pro_of_image(np.ones((4, 4)), np.zeros((4, 4), bool))


@pytest.mark.parametrize("batch", [1, 3, 7, 100])
def test_accumulator_equals_array_functions(batch):
    masks, maps = make_category(np.random.default_rng(9), n=14)
    expected = evaluate(masks, maps)
    acc = MetricAccumulator()
    for i in range(0, len(maps), batch):
        acc.update(torch.from_numpy(masks[i:i + batch, None].astype(np.uint8) * 255), torch.from_numpy(maps[i:i + batch]))
    assert acc.compute() == expected
    assert acc.compute() == expected                                                # compute twice: same answer
    acc.update(masks[:2], maps[:2])                                                 # and it keeps accumulating
    assert acc.compute() == evaluate(np.concatenate([masks, masks[:2]]), np.concatenate([maps, maps[:2]]))


def test_custom_image_scores():
    masks, maps = make_category(np.random.default_rng(2))
    scores = maps.mean((1, 2))
    assert abs(evaluate(masks, maps, scores)["i_auroc"] - roc_auc_score(masks.any((1, 2)), scores)) < 1e-12
    with pytest.raises(MetricError, match="image scores for 16 maps"): evaluate(masks, maps, scores[:3])
    with pytest.raises(MetricError, match="NaN/inf"): evaluate(masks, maps, np.full(16, np.nan))


def test_image_labels_given_by_the_dataset():
    "A defective image whose resized mask lost its defect stays defective when the dataset's labels are passed."
    masks, maps = make_category(np.random.default_rng(2))
    labels = masks.any((1, 2))
    scores = maps.max((1, 2))
    lost = np.flatnonzero(labels)[0]
    emptied = masks.copy(); emptied[lost] = False                                  # the defect vanished in resizing
    assert evaluate(emptied, maps, labels=labels)["i_auroc"] == evaluate(masks, maps)["i_auroc"]
    assert abs(evaluate(emptied, maps, labels=labels)["i_auroc"] - roc_auc_score(labels, scores)) < 1e-12
    assert evaluate(emptied, maps)["i_auroc"] != evaluate(masks, maps)["i_auroc"]  # read off the masks, it counts as good
    assert evaluate(emptied, maps, labels=labels)["p_auroc"] == evaluate(emptied, maps)["p_auroc"]   # pixels: the masks
    with pytest.raises(MetricError, match="16 image labels for 3 maps"): evaluate(masks[:3], maps[:3], labels=labels)
    with pytest.raises(MetricError, match="image labels must be 0 or 1: image 4 has 2"): evaluate(masks, maps, labels=np.where(np.arange(16) == 4, 2, labels))
    acc = MetricAccumulator()
    acc.update(emptied[:8], maps[:8], labels=labels[:8]); acc.update(emptied[8:], maps[8:], labels=labels[8:])
    assert acc.compute()["i_auroc"] == evaluate(masks, maps)["i_auroc"]


def test_no_defective_image():
    masks, maps = make_category(np.random.default_rng(1))
    good = np.zeros_like(masks)
    with pytest.raises(MetricError, match="no defective image"): evaluate(good, maps)
    for fn in (pixel_auroc, pixel_ap, aupro, pro_3cad):
        with pytest.raises(MetricError, match="undefined"): fn(good, maps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = evaluate(good, maps, on_undefined="nan")
    assert all(np.isnan(r[k]) for k in METRIC_NAMES)
    assert len(caught) == 1 and str(caught[0].message).startswith(", ".join(METRIC_NAMES) + " set to NaN")  # one line


def test_only_defective_images_and_no_normal_pixel():
    masks, maps = make_category(np.random.default_rng(4), good_share=0.0)
    with pytest.raises(MetricError, match="image AUROC is undefined"): evaluate(masks, maps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = evaluate(masks, maps, on_undefined="nan")
    assert np.isnan(r["i_auroc"]) and abs(r["p_auroc"] - roc_auc_score(masks.ravel(), maps.ravel())) < 1e-12
    full = np.ones_like(masks)
    assert pixel_ap(full, maps) == 1.0
    with pytest.raises(MetricError, match="no normal pixel"): pixel_auroc(full, maps)
    with pytest.raises(MetricError, match="no normal pixel"): aupro(full, maps)


def test_constant_maps():
    masks, _ = make_category(np.random.default_rng(6))
    r = evaluate(masks, np.zeros(masks.shape, np.float32))
    assert r["i_auroc"] == 0.5 and r["p_auroc"] == 0.5 and r["pro_3cad"] == 0.0
    assert abs(r["p_ap"] - masks.mean()) < 1e-12
    assert abs(r["aupro"] - 0.15) < 1e-12                                          # the diagonal, to FPR 0.3


def test_nan_and_inf_in_maps():
    masks, maps = make_category(np.random.default_rng(8))
    maps[3, 0, 0] = np.nan; maps[5, 1, 1] = -np.inf
    with pytest.raises(MetricError, match=r"2 NaN/inf values \(images \[3, 5\]\)"): evaluate(masks, maps)
    acc = MetricAccumulator().update(masks[:3], maps[:3])
    with pytest.raises(MetricError, match=r"images \[3, 5\]"): acc.update(masks[3:], maps[3:])   # numbered in the stream


def test_shapes_must_match():
    masks, maps = make_category(np.random.default_rng(10))
    with pytest.raises(MetricError, match=r"masks are \(16, 20, 28\) but maps are \(16, 20, 27\)"): evaluate(masks, maps[..., :-1])
    with pytest.raises(MetricError, match="must be N x H x W"): evaluate(masks[0], maps[0])
    with pytest.raises(MetricError, match="must be N x H x W"): evaluate(masks[:, None].repeat(3, 1), maps[:, None].repeat(3, 1))
    acc = MetricAccumulator().update(masks, maps)
    with pytest.raises(MetricError, match="earlier batches"): acc.update(masks[:, :10], maps[:, :10])


def test_mask_values():
    masks, maps = make_category(np.random.default_rng(12))
    expected = evaluate(masks, maps)
    assert evaluate(masks.astype(np.uint8) * 255, maps) == expected
    assert evaluate(masks.astype(np.float32), maps) == expected
    assert evaluate(torch.from_numpy(masks).long(), maps) == expected
    with pytest.raises(MetricError, match=r"hold values \[0, 1, 255\]"):
        mixed = masks.astype(np.uint8); mixed[np.flatnonzero(masks.any((1, 2)))[0]] *= 255; evaluate(mixed, maps)
    with pytest.raises(MetricError, match=r"hold values \[0.0, 0.5\]"): evaluate(masks * 0.5, maps)


def test_empty_input():
    with pytest.raises(MetricError, match="empty input"): evaluate(np.zeros((0, 4, 4), bool), np.zeros((0, 4, 4)))
    with pytest.raises(MetricError, match="empty input"): evaluate(np.zeros((3, 0, 4), bool), np.zeros((3, 0, 4)))
    with pytest.raises(MetricError, match="empty input"): MetricAccumulator().compute()
    with pytest.raises(MetricError, match="empty input"): image_auroc([], [])


def test_bad_arguments():
    with pytest.raises(MetricError, match="fpr_limit"): MetricAccumulator(fpr_limit=0)
    masks, maps = make_category(np.random.default_rng(13))
    with pytest.raises(MetricError, match="fpr_limit"): aupro(masks, maps, 1.5)
    with pytest.raises(MetricError, match="on_undefined"): evaluate(masks, maps, on_undefined="ignore")
    with pytest.raises(MetricError, match="labels must be 0/1"): image_auroc([0, 2], [0.1, 0.2])
