"""The models shipped inside the package (left atrium, LGE-MR, one per network): verified weights,
reproducible output, usable from a fresh store with no download, accurate on a real scan they were not
trained on, with evidence maps that show the atrium."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegAttentionLib.modelstore.cards import builtin_cards
from MedSegAttentionLib.cli import main as medseg
from MedSegAttentionLib.modelstore.paths import bundled_weights_dir
from MedSegAttentionLib.modelstore.store import ModelStore
from MedSegAttentionLib.modelstore.weights import sha256_file
from training.bundling import (MAX_BUNDLED_BYTES, REFERENCE_DIR, bundled_bytes, load_reference, reference_probabilities,
                               stored_reference_input)
from training.evaluate import map_spread

FOLD_0_FIRST_VALIDATION_CASE = "la_38cws742"  # split seed 12345 (docs/results.md)
BUNDLED = {card.id: card for card in builtin_cards() if (card.weights or {}).get("bundled")}
per_model = pytest.mark.parametrize("model_id", sorted(BUNDLED))


def test_the_left_atrium_sipnet_ships_and_all_bundled_weights_stay_small() -> None:
    assert "sipnet-left-atrium-mr" in BUNDLED
    files = sorted(p.name for p in bundled_weights_dir().glob("*.safetensors"))
    assert files == sorted(card.weights["file"] for card in BUNDLED.values())  # no stray weights in the package
    assert bundled_bytes() <= MAX_BUNDLED_BYTES
    references = sum(p.stat().st_size for p in REFERENCE_DIR.glob("*.safetensors"))
    assert bundled_bytes() + references <= MAX_BUNDLED_BYTES  # what the repository carries for them, tests included


@per_model
def test_bundled_weights_match_their_card(model_id: str) -> None:
    card = BUNDLED[model_id]
    weights = bundled_weights_dir() / card.weights["file"]
    assert card.weights["dtype"] == "float16"
    assert weights.is_file(), f"{weights} is missing from the package"
    assert sha256_file(weights) == card.weights["sha256"]
    assert weights.stat().st_size == card.weights["size_bytes"]
    assert [label["name"] for label in card.labels] == ["left atrium"] and card.modality == "MR"


def test_a_fresh_store_runs_the_bundled_models_without_installing(tmp_path, capsys) -> None:
    store = ModelStore(tmp_path / "fresh")
    assert all(store.is_installed(card) and store.is_bundled(card) for card in BUNDLED.values())
    assert medseg(["--model-dir", str(store.root), "models", "--json"]) == 0
    entries = {e["id"]: e for e in json.loads(capsys.readouterr().out)}
    for model_id in BUNDLED:
        entry = entries[model_id]
        assert entry["installed"] is True and entry["bundled"] is True and entry["how_to_install"] == ""
    assert not store.weights_dir.exists()  # nothing was copied or downloaded


@per_model
def test_bundled_model_reproduces_its_reference_output(model_id: str, tmp_path) -> None:
    reference = load_reference(REFERENCE_DIR / f"{model_id}.safetensors")
    networks = ModelStore(tmp_path / "fresh").load_networks(BUNDLED[model_id], "cpu")
    outputs = reference_probabilities(networks, stored_reference_input(REFERENCE_DIR))
    assert set(outputs) == set(reference)
    for role, probabilities in outputs.items():  # every network of a cascade or every view
        expected = reference[role]
        assert probabilities.shape == expected.shape, role
        assert float((probabilities - expected).abs().max()) < 2e-3, role
        agreement = (probabilities.argmax(0) == expected.argmax(0)).float().mean()
        assert float(agreement) >= 0.999, role
    foreground = [float(p.argmax(0).float().mean()) for p in reference.values()]
    assert any(0.001 < f < 0.9 for f in foreground)  # the reference is not a trivial all-one-class map


@per_model
def test_segments_a_real_lge_mr_scan(model_id: str, shared_data, tmp_path) -> None:
    """A validation case of the bundled model's own fold (for a model trained on all 80 cases, which has
    seen every case, fold 0's first validation case: then a check of the shipped pipeline on real data,
    and its unseen-case accuracy is its fold-0 model's), through `medseg segment` from a fresh store (with
    test-time mirroring where the card offers its uncertainty map): exact geometry, Dice > 0.8, every
    attention-like map offered shows the atrium, and the uncertainty map where the card offers one."""
    card = BUNDLED[model_id]
    case = (card.weights["provenance"].get("val_cases") or [FOLD_0_FIRST_VALIDATION_CASE])[0]
    image = shared_data / "LeftAtrium2018" / "imagesTr" / f"{case}.nii.gz"
    truth = sitk.ReadImage(str(shared_data / "LeftAtrium2018" / "labelsTr" / f"{case}.nii.gz"))
    out = tmp_path / "out"
    mirroring = ["--tta"] if any(m["kind"] == "uncertainty" for m in card.maps) else []
    assert medseg(["--model-dir", str(tmp_path / "fresh"), "segment", str(image), "--model", model_id,
                   "--device", "cpu", "--output-dir", str(out), "--maps", "all", *mirroring]) == 0
    label = sitk.ReadImage(str(next(out.rglob("segmentation.nrrd"))))
    assert label.GetSize() == truth.GetSize() and np.allclose(label.GetOrigin(), truth.GetOrigin())
    assert np.allclose(label.GetSpacing(), truth.GetSpacing()) and np.allclose(label.GetDirection(), truth.GetDirection())
    pred, gt = sitk.GetArrayFromImage(label) > 0, sitk.GetArrayFromImage(truth) > 0
    dice = 2 * np.logical_and(pred, gt).sum() / (pred.sum() + gt.sum())
    assert dice > 0.8, f"Dice {dice:.3f} on {case}"
    maps = {p.stem: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in out.rglob("maps/*.nrrd")}
    assert sorted(maps) == sorted(m["name"] for m in card.maps)
    spacing = tuple(reversed(truth.GetSpacing()))
    for entry in card.maps:
        if entry["kind"] != "uncertainty":  # every evidence map offered shows structure near the atrium
            assert map_spread(maps[entry["name"]], gt, spacing) >= 0.3, entry["name"]
    if "uncertainty" in maps:
        uncertainty = maps["uncertainty"]
        assert 0.0 <= uncertainty.min() and uncertainty.max() <= 1.0 and uncertainty.max() > 0.1
