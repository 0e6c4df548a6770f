"""The model shipped inside the package (left atrium, LGE-MR): verified weights, reproducible output,
usable from a fresh store with no download, and accurate on a real scan it was not trained on."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
from safetensors.torch import load_file

from MedSegAttentionLib.modelstore.cards import builtin_cards
from MedSegAttentionLib.cli import main as medseg
from MedSegAttentionLib.modelstore.paths import bundled_weights_dir
from MedSegAttentionLib.modelstore.store import ModelStore
from MedSegAttentionLib.modelstore.weights import sha256_file
from training.bundling import MAX_BUNDLED_BYTES, REFERENCE_DIR, reference_probabilities
from training.evaluate import map_spread

MODEL_ID = "sipnet-left-atrium-mr"
CARD = next(card for card in builtin_cards() if card.id == MODEL_ID)
WEIGHTS = bundled_weights_dir() / CARD.weights["file"]


def test_bundled_weights_match_their_card_and_stay_small() -> None:
    assert CARD.weights["bundled"] is True and CARD.weights["dtype"] == "float16"
    assert WEIGHTS.is_file(), f"{WEIGHTS} is missing from the package"
    assert sha256_file(WEIGHTS) == CARD.weights["sha256"]
    assert WEIGHTS.stat().st_size == CARD.weights["size_bytes"] <= MAX_BUNDLED_BYTES
    assert [label["name"] for label in CARD.labels] == ["left atrium"] and CARD.modality == "MR"


def test_a_fresh_store_runs_the_bundled_model_without_installing(tmp_path, capsys) -> None:
    store = ModelStore(tmp_path / "fresh")
    assert store.is_installed(CARD) and store.is_bundled(CARD)
    assert medseg(["--model-dir", str(store.root), "models", "--json"]) == 0
    entry = next(e for e in json.loads(capsys.readouterr().out) if e["id"] == MODEL_ID)
    assert entry["installed"] is True and entry["bundled"] is True and entry["how_to_install"] == ""
    assert not store.weights_dir.exists()  # nothing was copied or downloaded


def test_bundled_model_reproduces_its_reference_output(tmp_path) -> None:
    reference = load_file(str(REFERENCE_DIR / f"{MODEL_ID}.safetensors"))
    networks = ModelStore(tmp_path / "fresh").load_networks(CARD, "cpu")
    probabilities = reference_probabilities(networks, reference["input"])["main"]
    expected = reference["probabilities.main"]
    assert float((probabilities - expected).abs().max()) < 2e-3
    agreement = (probabilities.argmax(0) == expected.argmax(0)).float().mean()
    assert float(agreement) >= 0.999
    assert 0.01 < float(expected.argmax(0).float().mean()) < 0.9  # the reference is not a trivial all-one-class map


def test_segments_a_real_lge_mr_scan_it_was_not_trained_on(shared_data, tmp_path) -> None:
    """A validation case of the bundled model's own fold, through `medseg segment` from a fresh store, with
    test-time mirroring: exact geometry, Dice > 0.8, an attention map that shows the atrium, an uncertainty map."""
    case = CARD.weights["provenance"]["val_cases"][0]
    image = shared_data / "LeftAtrium2018" / "imagesTr" / f"{case}.nii.gz"
    truth = sitk.ReadImage(str(shared_data / "LeftAtrium2018" / "labelsTr" / f"{case}.nii.gz"))
    out = tmp_path / "out"
    assert medseg(["--model-dir", str(tmp_path / "fresh"), "segment", str(image), "--model", MODEL_ID,
                   "--device", "cpu", "--output-dir", str(out), "--maps", "all", "--tta"]) == 0
    label = sitk.ReadImage(str(next(out.rglob("segmentation.nrrd"))))
    assert label.GetSize() == truth.GetSize() and np.allclose(label.GetOrigin(), truth.GetOrigin())
    assert np.allclose(label.GetSpacing(), truth.GetSpacing()) and np.allclose(label.GetDirection(), truth.GetDirection())
    pred, gt = sitk.GetArrayFromImage(label) > 0, sitk.GetArrayFromImage(truth) > 0
    dice = 2 * np.logical_and(pred, gt).sum() / (pred.sum() + gt.sum())
    assert dice > 0.8, f"Dice {dice:.3f} on {case}"
    maps = {p.stem: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in out.rglob("maps/*.nrrd")}
    assert sorted(maps) == sorted(m["name"] for m in CARD.maps)
    spacing = tuple(reversed(truth.GetSpacing()))
    for entry in CARD.maps:
        if entry["kind"] == "attention":  # every attention map offered shows structure near the atrium
            assert map_spread(maps[entry["name"]], gt, spacing) >= 0.3, entry["name"]
    uncertainty = maps["uncertainty"]
    assert 0.0 <= uncertainty.min() and uncertainty.max() <= 1.0 and uncertainty.max() > 0.1
