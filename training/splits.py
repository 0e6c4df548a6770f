"""Seeded k-fold splits, saved once per experiment and reused by every fold and rerun.

Splits follow nnU-Net's ``splits_final.json``: a list of ``{"train": [...], "val": [...]}`` per fold,
stored as ``splits.json`` in the experiment folder shared by all folds; a file that is already there
is reused as is, so every fold (and every rerun, and ``python -m training evaluate``) sees the same
partition, even after hand-editing.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .raw_dataset import Case, RawDataset

__all__ = ["SPLITS_FILE", "fold_cases", "load_or_create_splits", "make_splits", "read_splits"]

SPLITS_FILE = "splits.json"


def make_splits(case_ids: Sequence[str], n_folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """Seeded k-fold partition of ``case_ids`` (order-independent: ids are sorted first).

    Returns one ``{"train": [...], "val": [...]}`` per fold; the validation sets are disjoint and
    together cover every case, fold sizes differ by at most one.
    """
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise ValueError("case identifiers must be unique")
    if not 2 <= n_folds <= len(ids):
        raise ValueError(f"n_folds must be between 2 and the number of cases ({len(ids)}), got {n_folds}")
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = np.array_split(order, n_folds)
    splits = []
    for k in range(n_folds):
        val = sorted(ids[i] for i in folds[k])
        val_set = set(val)
        splits.append({"train": [i for i in ids if i not in val_set], "val": val})
    return splits


def read_splits(
    path: str | os.PathLike[str], case_ids: Sequence[str], n_folds: int | None = None
) -> list[dict[str, list[str]]]:
    """Splits stored in ``path``, checked against the data set's ``case_ids`` (and ``n_folds`` if given).

    Raises ``ValueError`` (saying to delete the file) when it is malformed, has another number of
    folds or names unknown cases; cases of the data set that are in no fold are reported with a
    warning and are not used.
    """
    path = Path(path)
    try:
        splits = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it to regenerate") from None
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "val"} <= set(s) for s in splits):
        raise ValueError(f"{path}: expected a list of {{'train': [...], 'val': [...]}}; delete it to regenerate")
    if n_folds is not None and len(splits) != n_folds:
        raise ValueError(f"{path} has {len(splits)} folds but {n_folds} were asked for; delete it to regenerate")
    known = set(case_ids)
    listed = {i for s in splits for i in s["train"] + s["val"]}
    unknown = sorted(listed - known)
    if unknown:
        raise ValueError(f"{path} names cases not in the data set: {unknown[:5]}; delete it to regenerate")
    unused = sorted(known - listed)
    if unused:
        warnings.warn(f"{path}: {len(unused)} case(s) of the data set are in no fold: {unused[:5]}", stacklevel=2)
    return splits


def load_or_create_splits(
    directory: str | os.PathLike[str], case_ids: Sequence[str], n_folds: int = 5, seed: int = 12345
) -> list[dict[str, list[str]]]:
    """Splits from ``directory/splits.json``, created with :func:`make_splits` when the file is absent.

    ``directory`` is the experiment folder shared by all folds (each fold's output sits below it). An
    existing file is reused as is (like nnU-Net's ``splits_final.json``), after :func:`read_splits`
    checked it against the data set and ``n_folds``.
    """
    path = Path(directory) / SPLITS_FILE
    if path.is_file():
        return read_splits(path, case_ids, n_folds)
    splits = make_splits(list(case_ids), n_folds=n_folds, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(path, splits)
    return splits


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def fold_cases(
    dataset: RawDataset, splits: Sequence[Mapping[str, Sequence[str]]], fold: int | str
) -> tuple[list[Case], list[Case]]:
    """(train, val) cases of ``fold``; ``fold="all"`` trains on every case with an empty validation list."""
    if fold == "all":
        return list(dataset.cases), []
    if not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise ValueError(f"fold must be 'all' or an integer in [0, {len(splits)}), got {fold!r}")
    by_id = {c.case_id: c for c in dataset.cases}
    return [by_id[i] for i in splits[fold]["train"]], [by_id[i] for i in splits[fold]["val"]]
