"""Per-class evaluation metrics on label volumes with physical spacing.

Overlap metrics (voxel counts, exact): Dice, IoU (Jaccard), VOE = 1 - IoU, and RVD = (|P| - |G|) / |G|
(signed relative volume difference; PROMISE12's aRVD is its absolute value in percent). Surface
metrics (in the units of ``spacing``, normally mm): HD95 and ASSD, from MONAI's
``compute_hausdorff_distance`` / ``compute_average_surface_distance``. Surfaces are the mask voxels
with a 6-connected (face) neighbour outside the mask; distances run between voxel centres with
exact Euclidean distance transforms in physical units. HD95 is the larger of the two directed 95th
percentiles (linear interpolation); ASSD is the mean over the distances of both surfaces to each other.

Arrays are in numpy axis order and ``spacing`` is given in the same order (e.g. (z, y, x), as
:attr:`training.case_reading.CaseData.spacing`); ``None`` means 1 per axis.

Empty masks (P = prediction, G = ground truth of one class):

=================  ======  =====  ===  ====  ===========  ===========
case               Dice    IoU    VOE  RVD   HD95         ASSD
=================  ======  =====  ===  ====  ===========  ===========
P and G empty      1       1      0    0     0            0
G empty, P not     0       0      1    NaN   NaN          NaN
P empty, G not     0       0      1    -1    NaN          NaN
=================  ======  =====  ===  ====  ===========  ===========

Both empty is a correct "absent" call, scored as perfect agreement. With exactly one mask empty
there is no surface to measure to, so distances are undefined (NaN), as is the relative volume
difference from an empty reference; averaging uses ``nanmean`` and reports how many values were
NaN (:func:`summarize`), so such cases are visible rather than silently scored with an arbitrary
large distance.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

__all__ = [
    "METRICS",
    "assd",
    "case_metrics",
    "dice",
    "hd95",
    "iou",
    "rvd",
    "summarize",
    "surface_distances",
    "voe",
]

#: Metric names in the order :func:`case_metrics` reports them; True where higher is better.
METRICS: dict[str, bool] = {"dice": True, "iou": True, "voe": False, "rvd": False, "hd95": False, "assd": False}


def _mask(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a).astype(bool, copy=False)


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = _mask(pred), _mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} != ground truth shape {g.shape}")
    return p, g


def dice(pred: Any, gt: Any) -> float:
    """2 |P n G| / (|P| + |G|); 1 when both masks are empty."""
    p, g = _pair(pred, gt)
    total = int(p.sum()) + int(g.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(p, g).sum()) / total


def iou(pred: Any, gt: Any) -> float:
    """Jaccard index |P n G| / |P u G|; 1 when both masks are empty."""
    p, g = _pair(pred, gt)
    union = int(np.logical_or(p, g).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, g).sum()) / union


def voe(pred: Any, gt: Any) -> float:
    """Volumetric overlap error 1 - IoU; 0 when both masks are empty."""
    return 1.0 - iou(pred, gt)


def rvd(pred: Any, gt: Any) -> float:
    """Signed relative volume difference (|P| - |G|) / |G|; 0 if both empty, NaN if only G is empty."""
    p, g = _pair(pred, gt)
    vp, vg = int(p.sum()), int(g.sum())
    if vg == 0:
        return 0.0 if vp == 0 else math.nan
    return (vp - vg) / vg


def _spacing(spacing: Sequence[float] | float | None, ndim: int) -> list[float]:
    if spacing is None:
        return [1.0] * ndim
    if isinstance(spacing, (int, float)):
        return [float(spacing)] * ndim
    values = [float(s) for s in spacing]
    if len(values) != ndim:
        raise ValueError(f"spacing {tuple(values)} has {len(values)} values for a {ndim}-D mask")
    return values


def _surface_metric(pred: Any, gt: Any, spacing: Sequence[float] | float | None, kind: str) -> float:
    p, g = _pair(pred, gt)
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return 0.0
    if has_p != has_g:
        return math.nan
    sp = _spacing(spacing, p.ndim)
    yp = torch.from_numpy(p[None, None].astype(np.float32))
    yg = torch.from_numpy(g[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "hd95":
            value = compute_hausdorff_distance(yp, yg, include_background=True, percentile=95, spacing=sp)
        else:
            value = compute_average_surface_distance(yp, yg, include_background=True, symmetric=True, spacing=sp)
    return float(value.reshape(-1)[0])


def hd95(pred: Any, gt: Any, spacing: Sequence[float] | float | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance; 0 if both empty, NaN if exactly one is empty."""
    return _surface_metric(pred, gt, spacing, "hd95")


def assd(pred: Any, gt: Any, spacing: Sequence[float] | float | None = None) -> float:
    """Average symmetric surface distance; 0 if both empty, NaN if exactly one is empty."""
    return _surface_metric(pred, gt, spacing, "assd")


def surface_distances(pred: Any, gt: Any, spacing: Sequence[float] | float | None = None) -> dict[str, float]:
    """``{"hd95": ..., "assd": ...}`` for one pair of masks."""
    return {"hd95": hd95(pred, gt, spacing), "assd": assd(pred, gt, spacing)}


def _class_masks(
    pred: np.ndarray, gt: np.ndarray, classes: Mapping[Any, int | Sequence[int]] | Sequence[int] | None
) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
    if classes is None:
        present = set(np.unique(gt).tolist()) | set(np.unique(pred).tolist())
        classes = sorted(int(c) for c in present if c != 0)
    if not isinstance(classes, Mapping):
        classes = {int(c): int(c) for c in classes}
    out = {}
    for name, values in classes.items():
        vals = [int(values)] if isinstance(values, (int, np.integer)) else [int(v) for v in values]
        out[name] = (np.isin(pred, vals), np.isin(gt, vals))
    return out


def case_metrics(
    pred: Any,
    gt: Any,
    spacing: Sequence[float] | float | None = None,
    classes: Mapping[Any, int | Sequence[int]] | Sequence[int] | None = None,
    metrics: Iterable[str] = tuple(METRICS),
) -> dict[Any, dict[str, float]]:
    """Metrics per class for one case of integer label volumes ``pred`` and ``gt`` (same shape).

    ``classes``: a list of label values, or a mapping name -> value or list of values (a region such
    as ``{"gland": [1, 2]}``), or ``None`` for every non-zero value present in either volume.
    Returns ``{class: {metric: value}}`` with the metrics named in ``metrics`` (see :data:`METRICS`).
    """
    p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    g = gt.detach().cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} != ground truth shape {g.shape}")
    wanted = list(metrics)
    unknown = sorted(set(wanted) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
    functions = {"dice": dice, "iou": iou, "voe": voe, "rvd": rvd}
    results: dict[Any, dict[str, float]] = {}
    for name, (pm, gm) in _class_masks(p, g, classes).items():
        row = {m: functions[m](pm, gm) for m in wanted if m in functions}
        if "hd95" in wanted:
            row["hd95"] = hd95(pm, gm, spacing)
        if "assd" in wanted:
            row["assd"] = assd(pm, gm, spacing)
        results[name] = {m: row[m] for m in wanted}
    return results


def summarize(per_case: Iterable[Mapping[Any, Mapping[str, float]]]) -> dict[Any, dict[str, dict[str, float]]]:
    """Aggregate :func:`case_metrics` results: ``{class: {metric: {"mean", "std", "median", "n", "n_nan"}}}``.

    NaN values (undefined distances, see the module docstring) are left out of the statistics and
    counted in ``n_nan``; ``n`` counts the values used.
    """
    values: dict[Any, dict[str, list[float]]] = {}
    for case in per_case:
        for cls, row in case.items():
            for metric, value in row.items():
                values.setdefault(cls, {}).setdefault(metric, []).append(float(value))
    out: dict[Any, dict[str, dict[str, float]]] = {}
    for cls, rows in values.items():
        out[cls] = {}
        for metric, vals in rows.items():
            arr = np.asarray(vals, dtype=float)
            finite = arr[~np.isnan(arr)]
            n = int(finite.size)
            out[cls][metric] = {
                "mean": float(finite.mean()) if n else math.nan,
                "std": float(finite.std()) if n else math.nan,
                "median": float(np.median(finite)) if n else math.nan,
                "n": n,
                "n_nan": int(arr.size - n),
            }
    return out
