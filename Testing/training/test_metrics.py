"""training.metrics on shapes with known overlap and surface distance, with anisotropic spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from training.metrics import METRICS, assd, case_metrics, dice, hd95, iou, rvd, summarize, voe

SPACING = (2.5, 0.7, 0.9)  # numpy (z, y, x) order


def box(shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def test_overlap_of_two_boxes_is_exact() -> None:
    gt = box((12, 12, 12), (2, 2, 2), (8, 8, 8))  # 216 voxels
    pred = box((12, 12, 12), (4, 2, 2), (10, 8, 9))  # 6 * 6 * 7 = 252 voxels, overlap 4 * 6 * 6 = 144
    assert dice(pred, gt) == pytest.approx(2 * 144 / (216 + 252))
    assert iou(pred, gt) == pytest.approx(144 / (216 + 252 - 144))
    assert voe(pred, gt) == pytest.approx(1 - 144 / 324)
    assert rvd(pred, gt) == pytest.approx((252 - 216) / 216)
    assert rvd(gt, pred) == pytest.approx((216 - 252) / 252)
    assert dice(torch.from_numpy(pred), torch.from_numpy(gt)) == dice(pred, gt)  # tensors accepted


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3])
def test_plates_shifted_along_each_axis(axis: int, k: int) -> None:
    """One-voxel-thick plates k voxels apart: every surface voxel is exactly k * spacing[axis] away."""
    lo, hi = [2, 2, 2], [9, 9, 9]
    lo[axis], hi[axis] = 3, 4
    gt = box((12, 12, 12), tuple(lo), tuple(hi))
    lo[axis], hi[axis] = 3 + k, 4 + k
    pred = box((12, 12, 12), tuple(lo), tuple(hi))
    expected = k * SPACING[axis]
    assert hd95(pred, gt, SPACING) == pytest.approx(expected, rel=1e-5)
    assert assd(pred, gt, SPACING) == pytest.approx(expected, rel=1e-5)


def _brute_force(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """HD95 and ASSD from all pairs of surface voxels (6-connected surfaces), independent of MONAI."""

    def surface(m: np.ndarray) -> np.ndarray:
        return np.argwhere(m & ~ndimage.binary_erosion(m)) * np.asarray(spacing)

    sp, sg = surface(pred), surface(gt)
    d = np.sqrt(((sp[:, None, :] - sg[None, :, :]) ** 2).sum(-1))
    d_pg, d_gp = d.min(axis=1), d.min(axis=0)
    hd = max(np.quantile(d_pg, 0.95), np.quantile(d_gp, 0.95))
    return float(hd), float(np.concatenate([d_pg, d_gp]).mean())


def test_shifted_cube_surface_distances() -> None:
    """A 6-voxel cube shifted by k = 2 along z: Hausdorff distance exactly k * 2.5 mm, HD95/ASSD below it."""
    k = 2
    gt = box((12, 12, 12), (2, 2, 2), (8, 8, 8))
    pred = box((12, 12, 12), (2 + k, 2, 2), (8 + k, 8, 8))
    h, a = hd95(pred, gt, SPACING), assd(pred, gt, SPACING)
    ref_h, ref_a = _brute_force(pred, gt, SPACING)
    assert h == pytest.approx(ref_h, rel=1e-5) and a == pytest.approx(ref_a, rel=1e-5)
    assert 0 < a < h <= k * SPACING[0] + 1e-6
    # the far face of each cube (36 of its 152 surface voxels, > 5 %) lies the full shift away from
    # the other surface, so the 95th percentile is the Hausdorff distance itself
    assert h == pytest.approx(k * SPACING[0], rel=1e-5)
    # isotropic spacing 1 and shift along x: same distances in voxels
    pred_x = box((12, 12, 12), (2, 2, 2 + k), (8, 8, 8 + k))
    assert hd95(pred_x, gt) == pytest.approx(_brute_force(pred_x, gt, (1, 1, 1))[0], rel=1e-5)


def test_irregular_shapes_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    gt = ndimage.binary_opening(rng.random((10, 14, 12)) > 0.45, iterations=1)
    pred = ndimage.binary_dilation(gt, iterations=1) & (rng.random(gt.shape) > 0.1)
    ref_h, ref_a = _brute_force(pred, gt, SPACING)
    assert hd95(pred, gt, SPACING) == pytest.approx(ref_h, rel=1e-5)
    assert assd(pred, gt, SPACING) == pytest.approx(ref_a, rel=1e-5)


def test_empty_masks() -> None:
    empty = np.zeros((6, 6, 6), dtype=bool)
    full = box((6, 6, 6), (1, 1, 1), (4, 4, 4))
    both = case_metrics(empty.astype(int), empty.astype(int), SPACING, classes=[1])[1]
    assert both == {"dice": 1.0, "iou": 1.0, "voe": 0.0, "rvd": 0.0, "hd95": 0.0, "assd": 0.0}
    fp = case_metrics(full.astype(int), empty.astype(int), SPACING, classes=[1])[1]  # G empty, P not
    assert fp["dice"] == 0.0 and fp["iou"] == 0.0 and fp["voe"] == 1.0
    assert math.isnan(fp["rvd"]) and math.isnan(fp["hd95"]) and math.isnan(fp["assd"])
    fn = case_metrics(empty.astype(int), full.astype(int), SPACING, classes=[1])[1]  # P empty, G not
    assert fn["dice"] == 0.0 and fn["rvd"] == -1.0 and math.isnan(fn["hd95"]) and math.isnan(fn["assd"])


def test_case_metrics_classes_regions_and_summary() -> None:
    gt = np.zeros((8, 8, 8), dtype=np.int16)
    gt[2:6, 2:6, 2:6] = 1
    gt[3:5, 3:5, 3:5] = 2
    pred = gt.copy()
    pred[2, 2:6, 2:6] = 0  # lose one slab of class 1
    res = case_metrics(pred, gt, SPACING)
    assert list(res) == [1, 2] and list(res[1]) == list(METRICS)
    assert res[2]["dice"] == 1.0 and res[2]["hd95"] == 0.0
    assert res[1]["dice"] == pytest.approx(2 * 40 / (40 + 56))
    regions = case_metrics(pred, gt, SPACING, classes={"gland": [1, 2]}, metrics=["dice", "rvd"])
    assert regions == {"gland": {"dice": pytest.approx(2 * 48 / 112), "rvd": pytest.approx(-16 / 64)}}
    empty_pred = np.zeros_like(gt)
    summary = summarize([res, case_metrics(empty_pred, gt, SPACING, classes=[1, 2])])
    assert summary[1]["dice"]["n"] == 2 and summary[1]["dice"]["mean"] == pytest.approx(res[1]["dice"] / 2)
    assert summary[1]["hd95"]["n"] == 1 and summary[1]["hd95"]["n_nan"] == 1
    assert summary[1]["hd95"]["mean"] == pytest.approx(res[1]["hd95"])
    with pytest.raises(ValueError, match="unknown metric"):
        case_metrics(pred, gt, metrics=["dice", "hd100"])
    with pytest.raises(ValueError, match="shape"):
        dice(pred[:-1], gt)


def test_two_dimensional_masks() -> None:
    gt = box((10, 10), (2, 2), (7, 7))
    pred = box((10, 10), (2, 4), (7, 9))  # shifted by 2 along x, pixel spacing 0.5 x 0.8
    assert hd95(pred, gt, (0.5, 0.8)) == pytest.approx(_brute_force(pred, gt, (0.5, 0.8))[0], rel=1e-5)
    assert dice(pred, gt) == pytest.approx(2 * 15 / 50)
