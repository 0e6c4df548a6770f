"""Evaluate an exported model on a fold's validation cases through the real inference engine.

Each case runs through :class:`MedSegAttentionLib.inference.engine.Predictor` (the same code as ``medseg
segment``: preprocessing, the card's pipeline, mapping back to the input grid, post-processing) and
is compared with its label on the original grid and spacing. Output: ``per_case.csv`` (one row per
case and class) and ``summary.json`` (:func:`training.metrics.summarize` per class), also printed.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from MedSegAttentionLib.modelstore.cards import ModelCard
from MedSegAttentionLib.cli import with_inference_settings
from MedSegAttentionLib.inference.engine import Predictor
from MedSegAttentionLib.modelstore.store import ModelStore

from .case_reading import read_case_image, read_case_label
from .raw_dataset import Case, load_dataset
from .fold_export import json_safe
from .labels import map_labels, resolve_label_mapping
from .metrics import METRICS, case_metrics, summarize
from .robustness import make_variant
from .splits import SPLITS_FILE, fold_cases, make_splits, read_splits

__all__ = ["evaluate_cases", "evaluate_model", "find_model"]


def find_model(model_dir: str | Path) -> tuple[Path, Path]:
    """The (card, weights) pair in an export folder (the one card whose weights file is present)."""
    folder = Path(model_dir)
    for card_path in sorted(folder.glob("*.json")):
        try:
            card = ModelCard.load(card_path)
        except Exception:  # noqa: BLE001 - other JSON files in the folder
            continue
        if card.weights and (folder / card.weights["file"]).is_file():
            return card_path, folder / card.weights["file"]
    raise FileNotFoundError(f"no model card with its weights file in {folder}")


def _cases_for_fold(data: str | Path, fold: int | str, card: ModelCard, splits_dir: str | Path | None) -> list[Case]:
    """Validation cases of ``fold``: from ``splits_dir/splits.json`` when given, else the cases the
    card's provenance says the model was validated on (same fold), else the seeded split it names."""
    dataset = load_dataset(data)
    if fold == "all":
        return list(dataset.cases)
    prov = (card.weights or {}).get("provenance") or {}
    path = Path(splits_dir) / SPLITS_FILE if splits_dir else None
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (--splits-dir is the experiment folder of the training run)")
        splits = read_splits(path, dataset.case_ids)
    elif prov.get("fold") == fold and prov.get("val_cases") is not None:
        by_id = {c.case_id: c for c in dataset.cases}
        missing = sorted(set(prov["val_cases"]) - set(by_id))
        if missing:
            raise ValueError(f"the card's validation cases {missing[:5]} are not in {data}")
        return [by_id[i] for i in prov["val_cases"]]
    else:
        splits = make_splits(dataset.case_ids, int(prov.get("folds", 5)), int(prov.get("split_seed", 12345)))
    return fold_cases(dataset, splits, fold)[1]


def map_spread(values: np.ndarray, organ: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float = 10.0) -> float:
    """5th-95th percentile spread of an evidence map near the organ: inside the organ's bounding box
    grown by ``margin_mm``. A flat wash gives about 0; a map that outlines the organ approaches 1."""
    margin = [int(np.ceil(margin_mm / s)) for s in spacing_zyx]
    coords = np.nonzero(organ)
    if not coords[0].size:
        return float("nan")
    box = tuple(slice(max(int(c.min()) - m, 0), int(c.max()) + m + 1) for c, m in zip(coords, margin))
    low, high = np.percentile(values[box], [5, 95])
    return float(high - low)


def evaluate_cases(card: ModelCard, store: ModelStore, cases: Sequence[Case], label_mapping: Any = None,
                   device: str = "auto", variant: str = "original", tta: bool | None = None,
                   with_maps: bool = False, level: str | None = None) -> list[dict[str, Any]]:
    """Rows ``{"case", "class", "name", metrics..., "seconds"}`` for every case and card label.

    ``variant`` (:mod:`training.robustness`) delivers each case on another grid first; ``tta`` is the
    engine's test-time mirroring switch (``None``: as the card says). ``with_maps`` also computes the
    evidence maps and adds ``spread:<map>`` (:func:`map_spread` near the case's foreground) to each row.
    ``level``: an ANU-Net pruning level (``None``: the card's default).
    """
    predictor = Predictor(card, store, device, level=level, tta=tta)
    classes = {label["value"]: label["name"] for label in card.labels}
    rows: list[dict[str, Any]] = []
    for case in cases:
        image, gt_image = make_variant(variant, read_case_image(case), read_case_label(case))
        t0 = time.perf_counter()
        result = predictor.predict(image, maps=with_maps)
        seconds = time.perf_counter() - t0
        pred = sitk.GetArrayFromImage(result.label)
        gt = sitk.GetArrayFromImage(gt_image).astype(np.int64)
        if label_mapping:
            gt = map_labels(gt, resolve_label_mapping(label_mapping))
        spacing = tuple(reversed(gt_image.GetSpacing()))
        spreads = {f"spread:{name}": map_spread(sitk.GetArrayViewFromImage(m), gt > 0, spacing)
                   for name, m in result.maps.items()}
        for value, values in case_metrics(pred, gt, spacing, classes=list(classes)).items():
            rows.append({"case": case.case_id, "class": value, "name": classes[value], **values, "seconds": seconds,
                         **spreads})
    return rows


def evaluate_model(card_path: str | Path, weights_path: str | Path, data: str | Path, fold: int | str,
                   out_dir: str | Path, splits_dir: str | Path | None = None, label_mapping: Any = None,
                   device: str = "auto", variant: str = "original", tta: bool | None = None,
                   with_maps: bool = False, level: str | None = None, inference: Sequence[str] = ()) -> dict[str, Any]:
    """Install the model in a temporary store, evaluate the fold's validation cases (delivered as
    ``variant``, with the card's inference settings changed by ``inference``, ``KEY=VALUE`` items as
    ``medseg segment --inference`` takes them), write the table and summary to ``out_dir``; returns the summary."""
    card = ModelCard.load(card_path)
    if label_mapping is None:
        label_mapping = ((card.weights or {}).get("provenance") or {}).get("label_mapping")
    with tempfile.TemporaryDirectory(prefix="medseg-eval-") as tmp:
        store = ModelStore(tmp)
        card = with_inference_settings(store.install_card(card_path, weights_path), list(inference))
        cases = _cases_for_fold(data, fold, card, splits_dir)
        if not cases:
            raise ValueError(f"fold {fold!r} has no validation cases")
        rows = evaluate_cases(card, store, cases, label_mapping, device, variant, tta, with_maps, level)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "per_case.csv", "w", newline="", encoding="utf-8") as handle:
        spread_keys = sorted({k for row in rows for k in row if k.startswith("spread:")})
        writer = csv.DictWriter(handle, fieldnames=["case", "class", "name", *METRICS, "seconds", *spread_keys])
        writer.writeheader()
        writer.writerows(rows)
    per_case: dict[str, dict[Any, Mapping[str, float]]] = {}
    for row in rows:
        per_case.setdefault(row["case"], {})[row["name"]] = {m: row[m] for m in METRICS}
    seconds = sorted({row["case"]: row["seconds"] for row in rows}.values())
    summary = {"model": card.id, "fold": fold, "cases": len(per_case), "variant": variant, "tta": tta, "level": level,
               "seconds_per_case": {"mean": float(np.mean(seconds)), "median": float(np.median(seconds))},
               "map_spread": {key[len("spread:"):]: {"mean": float(np.nanmean([r[key] for r in rows])),
                                                     "min": float(np.nanmin([r[key] for r in rows]))}
                              for key in sorted({k for row in rows for k in row if k.startswith("spread:")})},
               "classes": summarize(per_case.values())}
    (out_dir / "summary.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n", encoding="utf-8")
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    lines = [f"{summary['model']}, fold {summary['fold']}, {summary['cases']} case(s), "
             f"variant {summary.get('variant', 'original')}, test-time mirroring {summary.get('tta')}"
             + (f", level {summary['level']}" if summary.get("level") else "")]
    for name, metrics in summary["classes"].items():
        parts = [f"{m} {v['mean']:.4f}" + (f" ({v['n_nan']} undefined)" if v["n_nan"] else "") for m, v in metrics.items()]
        lines.append(f"  {name}: " + ", ".join(parts))
    for name, spread in summary.get("map_spread", {}).items():
        lines.append(f"  map {name}: 5th-95th percentile spread near the organ, mean {spread['mean']:.3f}, min {spread['min']:.3f}")
    seconds = summary.get("seconds_per_case")
    if seconds:
        lines.append(f"  seconds per case (whole pipeline): mean {seconds['mean']:.1f}, median {seconds['median']:.1f}")
    return "\n".join(lines)
