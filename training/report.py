"""Cross-validation report: per-fold and mean Dice / HD95 / ASSD per model, a box plot and a montage.

``python -m training report --experiment NAME=runs/<recipe> [...] --out docs/results`` reads every
``fold_<k>/export/evaluation_fold_<k>/per_case.csv`` written by ``python -m training evaluate`` (the
real inference engine on the original grid), and writes

* ``cv_table.md``: one row per model and fold (cases, mean Dice, HD95, ASSD), then the mean and
  standard deviation over folds, and the mean over all cases;
* ``dice_boxplot.png``: per-case Dice, one box per model;
* with ``--montage-data``: ``montage.png``, the worst, median and best case of the first model (by
  Dice) with its segmentation outline (the label's in white) and an evidence map (``--montage-map``);
* with ``--compare-case CASE`` (and ``--montage-data``): ``comparison.md``, one row per model (Dice,
  HD95, ASSD, parameters, seconds per volume) and ``comparison.png``, that case shown by every model
  with its own first evidence map.
"""

from __future__ import annotations

import csv
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["FoldResult", "collect", "comparison_table", "cv_table", "save_boxplot", "save_case_montage", "save_comparison"]

REPORTED = ("dice", "hd95", "assd")


@dataclass(frozen=True)
class FoldResult:
    model: str
    fold: int
    rows: list[dict[str, str]]  # per_case.csv rows
    export_dir: Path

    def per_case(self, metric: str) -> dict[str, float]:
        """``{case: value}``, the mean over the case's classes (NaN where undefined)."""
        by_case: dict[str, list[float]] = {}
        for row in self.rows:
            by_case.setdefault(row["case"], []).append(float(row[metric]) if row[metric] not in ("", None) else math.nan)
        return {case: float(np.mean(v)) for case, v in by_case.items()}

    def values(self, metric: str) -> list[float]:
        """Per-case values with the undefined ones (NaN) left out."""
        return [v for v in self.per_case(metric).values() if not math.isnan(v)]

    def case_dice(self) -> dict[str, float]:
        return self.per_case("dice")


def collect(name: str, experiment: str | Path) -> list[FoldResult]:
    """Every evaluated fold of one experiment folder (``runs/<recipe>``), sorted by fold."""
    results = []
    for table in sorted(Path(experiment).glob("fold_*/export/evaluation_fold_*/per_case.csv")):
        match = re.fullmatch(r"evaluation_fold_(\d+)", table.parent.name)
        if not match:
            continue
        with open(table, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        results.append(FoldResult(name, int(match.group(1)), rows, table.parent.parent))
    if not results:
        raise FileNotFoundError(f"no evaluated folds under {experiment}: run 'python -m training evaluate' per fold")
    return sorted(results, key=lambda r: r.fold)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def cv_table(results: Sequence[FoldResult]) -> str:
    """Markdown table: per fold, then mean +- SD over folds and the mean over all cases, per model."""
    lines = ["| model | fold | cases | Dice | HD95 (mm) | ASSD (mm) |", "| --- | --- | --- | --- | --- | --- |"]
    models = list(dict.fromkeys(r.model for r in results))
    for model in models:
        folds = [r for r in results if r.model == model]
        for r in folds:
            cells = [f"{_mean(r.values(m)):.3f}" for m in REPORTED]
            lines.append(f"| {model} | {r.fold} | {len(r.case_dice())} | " + " | ".join(cells) + " |")
        fold_means = {m: [_mean(r.values(m)) for r in folds] for m in REPORTED}
        cells = [f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}" for v in fold_means.values()]
        lines.append(f"| **{model}** | mean ± SD over {len(folds)} fold(s) | {sum(len(r.case_dice()) for r in folds)} | "
                     + " | ".join(cells) + " |")
        pooled = [f"{_mean([v for r in folds for v in r.values(m)]):.3f}" for m in REPORTED]
        lines.append(f"| **{model}** | all cases pooled | | " + " | ".join(pooled) + " |")
    return "\n".join(lines) + "\n"


def save_boxplot(results: Sequence[FoldResult], path: str | Path) -> None:
    """Per-case Dice, one box per model (all folds' validation cases together)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in results))
    data = [[v for r in results if r.model == m for v in r.values("dice")] for m in models]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(models), 3.6))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(models) + 1), models, rotation=15, fontsize=8)
    ax.set_ylabel("Dice per case (validation folds)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def save_case_montage(results: Sequence[FoldResult], data: str | Path, path: str | Path, device: str = "auto",
                      map_name: str | None = None) -> list[str]:
    """Worst, median and best validation case of ``results`` (one model) by Dice: the middle axial
    slice of the label with the image, the label (white) and predicted (red) outlines and the model's
    evidence map ``map_name`` (default: the card's first). Returns the case ids shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from MedSegAttentionLib.inference.engine import segment
    from MedSegAttentionLib.modelstore.store import ModelStore

    from .case_reading import read_case_image, read_case_label
    from .raw_dataset import load_dataset
    from .evaluate import find_model

    by_case = {case: (r, dice) for r in results for case, dice in r.case_dice().items()}
    ranked = sorted(by_case, key=lambda c: by_case[c][1])
    chosen = [("worst", ranked[0]), ("median", ranked[len(ranked) // 2]), ("best", ranked[-1])]
    cases = {c.case_id: c for c in load_dataset(data).cases}
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    tmp = tempfile.TemporaryDirectory(prefix="medseg-report-")
    store, installed = ModelStore(tmp.name), {}
    for ax, (tag, case_id) in zip(axes, chosen):
        fold, dice = by_case[case_id]
        if fold.export_dir not in installed:  # one install per fold's export, however many cases it shows
            installed[fold.export_dir] = store.install_card(*find_model(fold.export_dir))
        card = installed[fold.export_dir]
        result = segment(read_case_image(cases[case_id]), card, store, device=device,
                         maps=[map_name] if map_name else [card.maps[0]["name"]] if card.maps else False)
        grey = sitk.GetArrayFromImage(read_case_image(cases[case_id])).astype(np.float32)
        gt = sitk.GetArrayFromImage(read_case_label(cases[case_id])) > 0
        _draw_case(ax, grey, gt, result, f"{tag}: {case_id} (fold {fold.fold})\nDice {dice:.3f}", 9)
    fig.suptitle(f"{results[0].model}: label (white), prediction (red), evidence map (inferno)", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
    tmp.cleanup()
    return [case_id for _, case_id in chosen]


def _draw_case(ax, grey: np.ndarray, gt: np.ndarray, result, title: str, fontsize: int) -> None:  # noqa: ANN001
    """One panel: the axial slice through the label's centre, the result's first map (inferno over the
    map's range, [0, 1] for most maps, the scan's own minimum to maximum for raw ones such as RSTN's
    saliency weights; values under 5 % of the range clear), the label (white) and prediction (red) outlines."""
    import SimpleITK as sitk

    z = int(np.round(np.mean(np.flatnonzero(gt.reshape(gt.shape[0], -1).any(axis=1))))) if gt.any() else gt.shape[0] // 2
    lo, hi = np.percentile(grey, [1, 99])
    ax.imshow(grey[z], cmap="gray", vmin=lo, vmax=hi)
    if result.maps:
        name, image = next(iter(result.maps.items()))
        low, high = result.map_ranges.get(name, (0.0, 1.0))
        heat = sitk.GetArrayFromImage(image)[z]
        ax.imshow(np.ma.masked_less(heat, low + 0.05 * (high - low)), cmap="inferno", vmin=low, vmax=high, alpha=0.45)
    ax.contour(gt[z], levels=[0.5], colors="white", linewidths=1.0)
    ax.contour((sitk.GetArrayFromImage(result.label) > 0)[z], levels=[0.5], colors="red", linewidths=1.0)
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def _parameters(export_dir: Path) -> int:
    """Parameters of an export's networks, counted from its card."""
    from MedSegAttentionLib.models import count_config_parameters
    from MedSegAttentionLib.modelstore.cards import ModelCard

    from .evaluate import find_model

    return count_config_parameters(ModelCard.load(find_model(export_dir)[0]).networks.values())


def comparison_table(results: Sequence[FoldResult]) -> str:
    """Markdown: one row per model over all its evaluated cases (mean Dice, HD95, ASSD), its parameters
    and the mean seconds per volume of the whole engine pipeline (``seconds`` of per_case.csv)."""
    lines = ["| model | cases | Dice | HD95 (mm) | ASSD (mm) | parameters | seconds per volume |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for model in dict.fromkeys(r.model for r in results):
        folds = [r for r in results if r.model == model]
        cells = [f"{_mean([v for r in folds for v in r.values(m)]):.3f}" for m in REPORTED]
        seconds = _mean([float(v) for r in folds for v in {row["case"]: row["seconds"] for row in r.rows}.values()])
        cases = sum(len(r.case_dice()) for r in folds)
        lines.append(f"| {model} | {cases} | " + " | ".join(cells)
                     + f" | {_parameters(folds[0].export_dir) / 1e6:.2f} M | {seconds:.1f} |")
    return "\n".join(lines) + "\n"


def save_comparison(results: Sequence[FoldResult], data: str | Path, case_id: str, path: str | Path,
                    device: str = "auto") -> None:
    """``case_id`` segmented by every model (one panel each, the first evaluated fold that holds the case):
    the slice through the label's centre with the label (white) and prediction (red) outlines and the
    model's first evidence map, titled with the map's legend and the case's Dice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from MedSegAttentionLib.inference.engine import segment
    from MedSegAttentionLib.modelstore.store import ModelStore

    from .case_reading import read_case_image, read_case_label
    from .evaluate import find_model
    from .raw_dataset import load_dataset

    case = next(c for c in load_dataset(data).cases if c.case_id == case_id)
    image = read_case_image(case)
    grey = sitk.GetArrayFromImage(image).astype(np.float32)
    gt = sitk.GetArrayFromImage(read_case_label(case)) > 0
    models = list(dict.fromkeys(r.model for r in results))
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.9), squeeze=False)
    with tempfile.TemporaryDirectory(prefix="medseg-compare-") as tmp:
        store = ModelStore(tmp)
        for ax, model in zip(axes[0], models):
            fold = next(r for r in results if r.model == model and case_id in r.case_dice())
            card = store.install_card(*find_model(fold.export_dir))
            shown = [m for m in card.maps if m["kind"] != "uncertainty"][:1]
            result = segment(image, card, store, device=device, maps=[shown[0]["name"]] if shown else False)
            legend = shown[0]["title"].split(":")[0].split(" (Eq.")[0] if shown else "no evidence map"
            _draw_case(ax, grey, gt, result, f"{model}: Dice {fold.case_dice()[case_id]:.3f}\n{legend}", 8)
    fig.suptitle(f"{case_id}: label (white), prediction (red), each network's evidence map (inferno over its range: "
                 "0-1, raw saliency over this scan's own)", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
