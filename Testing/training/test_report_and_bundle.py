"""Cross-validation report and bundling of an export, on two tiny trained folds of a phantom set."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import MedSegAttentionLib.modelstore.store as store_module
from conftest import tiny_overrides
from MedSegAttentionLib.errors import ModelError
from MedSegAttentionLib.modelstore.store import ModelStore
from training import bundling
from training.cli import main
from training.evaluate import evaluate_model

NAME = "sipnet-left-atrium-mr-compact"


@pytest.fixture(scope="module")
def two_folds(phantom_sets, tmp_path_factory) -> Path:
    """fit + evaluate folds 0 and 1 (2 steps each, float16 export) in one experiment folder."""
    data = phantom_sets["prostate"]
    out = tmp_path_factory.mktemp("cv") / NAME
    sets = [f"--set={s}" for s in tiny_overrides(NAME, steps=2)]
    for fold in (0, 1):
        assert main(["fit", "--recipe", NAME, "--data", str(data), "--fold", str(fold), "--out", str(out),
                     "--device", "cpu", "--no-progress", "--dtype", "float16", *sets]) == 0
        export = out / f"fold_{fold}" / "export"
        evaluate_model(export / "sipnet-left-atrium-mr.json", export / "sipnet-left-atrium-mr.safetensors", data, fold,
                       export / f"evaluation_fold_{fold}", device="cpu")
    return out


def _fold_mean(table: Path, metric: str) -> float:
    with open(table, newline="") as handle:
        return float(np.mean([float(r[metric]) for r in csv.DictReader(handle)]))


def test_report_table_boxplot_and_montage(two_folds, phantom_sets, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["report", "--experiment", f"compact={two_folds}", "--out", str(out),
                 "--montage-data", str(phantom_sets["prostate"]), "--device", "cpu"]) == 0
    table = (out / "cv_table.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| compact |")]
    assert [row.split("|")[2].strip() for row in rows] == ["0", "1"]
    for fold, row in enumerate(rows):  # the table's Dice is the per-case mean of evaluate's CSV
        csv_path = two_folds / f"fold_{fold}" / "export" / f"evaluation_fold_{fold}" / "per_case.csv"
        assert float(row.split("|")[4]) == pytest.approx(_fold_mean(csv_path, "dice"), abs=5e-4)
    assert "mean ± SD over 2 fold(s)" in table and "all cases pooled" in table
    for png in ("dice_boxplot.png", "montage.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "montage of" in capsys.readouterr().out


def test_report_compares_models_on_one_case(two_folds, phantom_sets, tmp_path, capsys) -> None:
    """Two 'models' (here the same experiment twice): one table row each with parameters and seconds, and
    one figure of the same case by each."""
    out, data = tmp_path / "compare", phantom_sets["prostate"]
    case = next(iter(json.loads((two_folds / "splits.json").read_text())[0]["val"]))
    assert main(["report", "--experiment", f"first={two_folds}", "--experiment", f"second={two_folds}", "--out", str(out),
                 "--montage-data", str(data), "--compare-case", case, "--device", "cpu"]) == 0
    table = (out / "comparison.md").read_text(encoding="utf-8").splitlines()
    assert table[0].startswith("| model | cases | Dice | HD95 (mm) | ASSD (mm) | parameters | seconds per volume |")
    rows = [line.split("|") for line in table[2:]]
    assert [row[1].strip() for row in rows] == ["first", "second"] and rows[0][2:] == rows[1][2:]
    with open(two_folds / "fold_0" / "export" / "evaluation_fold_0" / "per_case.csv", newline="") as handle:
        fold0 = list(csv.DictReader(handle))
    cases = int(rows[0][2])
    assert cases == len({r["case"] for r in fold0}) + len(json.loads((two_folds / "splits.json").read_text())[1]["val"])
    assert rows[0][6].strip().endswith(" M") and float(rows[0][7]) > 0
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"comparison of {case}" in capsys.readouterr().out


def test_report_refuses_a_folder_without_evaluations(tmp_path, capsys) -> None:
    with pytest.raises(FileNotFoundError, match="no evaluated folds"):
        main(["report", "--experiment", f"x={tmp_path}", "--out", str(tmp_path / "r")])
    assert main(["report", "--experiment", str(tmp_path), "--out", str(tmp_path / "r")]) == 2


def test_bundle_ships_weights_card_and_reference(two_folds, tmp_path, monkeypatch) -> None:
    export = two_folds / "fold_0" / "export"
    package, references = tmp_path / "pkg", tmp_path / "refs"
    card_path, weights, reference = bundling.bundle_model(export / "sipnet-left-atrium-mr.json",
                                                          export / "sipnet-left-atrium-mr.safetensors", package, references)
    card = json.loads(card_path.read_text())
    exported = json.loads((export / "sipnet-left-atrium-mr.json").read_text())
    assert card["weights"]["bundled"] is True and card["weights"]["sha256"] == exported["weights"]["sha256"]
    assert weights.read_bytes() == (export / "sipnet-left-atrium-mr.safetensors").read_bytes()
    assert not (references / ".bundle-store").exists()
    summary = json.loads((export / "evaluation_fold_0" / "summary.json").read_text())
    engine = card["weights"]["provenance"]["validation"]["engine"]  # the accuracy users meet, from evaluate
    assert engine["cases"] == summary["cases"] and engine["fold"] == 0
    assert engine["mean_dice"] == pytest.approx(next(iter(summary["classes"].values()))["dice"]["mean"], abs=1e-4)

    # an empty store runs the card on the bundled file, verified; an installed file takes precedence
    monkeypatch.setattr(store_module, "bundled_weights_dir", lambda: package / "bundled")
    from MedSegAttentionLib.modelstore.cards import ModelCard

    bundled_card = ModelCard.load(card_path)
    store = ModelStore(tmp_path / "empty-store")
    assert store.is_installed(bundled_card) and store.is_bundled(bundled_card)
    networks = store.load_networks(bundled_card, "cpu")
    stored = bundling.load_reference(reference)
    again = bundling.reference_probabilities(networks, bundling.stored_reference_input(references))
    assert torch.equal(again["main"][1:].half().float(), stored["main"][1:])  # stored in half precision
    assert stored["main"].shape == again["main"].shape and (references / bundling.REFERENCE_INPUT).is_file()
    store.install_card(card_path, weights)
    assert store.is_installed(bundled_card) and not store.is_bundled(bundled_card)

    # a bundled file that no longer matches its card is refused with the reason
    store = ModelStore(tmp_path / "other-store")
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelError, match="does not match its model card"):
        store.load_networks(bundled_card, "cpu")


def test_bundle_refuses_full_precision_and_oversized_weights(two_folds, tmp_path, monkeypatch) -> None:
    fold_dir = two_folds / "fold_1"
    from training.fold_export import export_fold
    from training.recipes import load_recipe

    recipe = load_recipe(NAME, tiny_overrides(NAME, steps=2))
    card_path, weights_path = export_fold(recipe, fold_dir, tmp_path / "fp32", dtype="float32")
    with pytest.raises(ValueError, match="half precision"):
        bundling.bundle_model(card_path, weights_path, tmp_path / "pkg", tmp_path / "refs")
    half_path, half_weights = export_fold(recipe, fold_dir, tmp_path / "fp16", dtype="float16")
    monkeypatch.setattr(bundling, "MAX_BUNDLED_BYTES", 1000)
    with pytest.raises(ValueError, match="must stay under"):
        bundling.bundle_model(half_path, half_weights, tmp_path / "pkg", tmp_path / "refs")
    assert not (tmp_path / "pkg").exists() and not (tmp_path / "refs" / ".bundle-store").exists()
    # the limit is on all bundled models together: one that fits alone is refused next to a large one
    size = half_weights.stat().st_size
    (tmp_path / "pkg" / "bundled").mkdir(parents=True)
    (tmp_path / "pkg" / "bundled" / "other-model.safetensors").write_bytes(b"\0" * size)
    monkeypatch.setattr(bundling, "MAX_BUNDLED_BYTES", int(1.5 * size))
    with pytest.raises(ValueError, match="other bundled models"):
        bundling.bundle_model(half_path, half_weights, tmp_path / "pkg", tmp_path / "refs")
    assert bundling.bundled_bytes(tmp_path / "pkg") == size


def test_bundle_counts_reference_outputs_in_the_size_limit(two_folds, tmp_path, monkeypatch) -> None:
    """The limit holds for what the repository carries: weights, reference outputs and their input.
    A model that fits by its weights alone is refused when its reference takes the total over, with
    nothing written; re-bundling the same model replaces its files instead of counting them twice."""
    export = two_folds / "fold_0" / "export"
    card_path, weights_path = export / "sipnet-left-atrium-mr.json", export / "sipnet-left-atrium-mr.safetensors"
    _, _, reference = bundling.bundle_model(card_path, weights_path, tmp_path / "a", tmp_path / "refs-a")
    total = weights_path.stat().st_size + sum(p.stat().st_size for p in (tmp_path / "refs-a").glob("*.safetensors"))
    assert total > weights_path.stat().st_size + reference.stat().st_size  # the shared input counts too
    monkeypatch.setattr(bundling, "MAX_BUNDLED_BYTES", total - 1)
    with pytest.raises(ValueError, match="weights and references together must stay under"):
        bundling.bundle_model(card_path, weights_path, tmp_path / "b", tmp_path / "refs-b")
    assert not (tmp_path / "b").exists()
    assert [p.name for p in (tmp_path / "refs-b").iterdir()] == [bundling.REFERENCE_INPUT]
    monkeypatch.setattr(bundling, "MAX_BUNDLED_BYTES", total)
    bundling.bundle_model(card_path, weights_path, tmp_path / "b", tmp_path / "refs-b")
    bundling.bundle_model(card_path, weights_path, tmp_path / "b", tmp_path / "refs-b")  # same model again: replaced
    assert bundling.bundled_bytes(tmp_path / "b") == weights_path.stat().st_size


def test_cv_stops_on_its_time_limit_and_continues_where_it_stopped(phantom_sets, tmp_path, capsys) -> None:
    data, out = phantom_sets["prostate"], tmp_path / "cv"
    args = ["cv", "--recipe", NAME, "--data", str(data), "--out", str(out), "--folds", "0,1", "--device", "cpu",
            "--no-progress", "--dtype", "float16", *[f"--set={s}" for s in tiny_overrides(NAME, steps=3)]]
    assert main([*args, "--time-limit", "0.001"]) == 3  # one step, then the clock stops it with a checkpoint
    assert "run the same command again" in capsys.readouterr().out
    first = [json.loads(line) for line in (out / "fold_0" / "main" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in first) == 1 and (out / "fold_0" / "main" / "last.pt").is_file()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| sipnet-left-atrium-mr-compact | 0 |" in printed and "| sipnet-left-atrium-mr-compact | 1 |" in printed
    steps = [json.loads(line)["step"] for line in (out / "fold_0" / "main" / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in line]
    assert steps == [1, 2, 3]  # resumed at step 1, not restarted
    assert main(args) == 0 and "fold 0: already evaluated" in capsys.readouterr().out


def test_cv_trains_every_network_of_a_cascade_then_exports_and_evaluates(phantom_sets, tmp_path, capsys) -> None:
    name = "rstn-left-atrium-mr-compact"
    data, out = phantom_sets["prostate"], tmp_path / "cv-rstn"
    args = ["cv", "--recipe", name, "--data", str(data), "--out", str(out), "--folds", "0", "--device", "cpu",
            "--no-progress", "--dtype", "float16", *[f"--set={s}" for s in tiny_overrides(name, steps=2)]]
    assert main(args) == 0
    for view in ("axial", "coronal", "sagittal"):
        assert (out / "fold_0" / view / "last.pt").is_file()
    assert (out / "fold_0" / "export" / "evaluation_fold_0" / "summary.json").is_file()
    assert f"| {name} | 0 |" in capsys.readouterr().out
