"""Every shipped recipe trains a few steps (tiny networks), exports, installs and segments a phantom."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import TINY, tiny_overrides
from MedSegAttentionLib.cli import main as medseg
from MedSegAttentionLib.inference.engine import segment
from MedSegAttentionLib.inference.preprocessing import preprocess
from MedSegAttentionLib.modelstore.store import ModelStore
from training.case_reading import read_case_image
from training.cli import main
from training.raw_dataset import load_dataset
from training.preprocessed import load_volumes, spec_hash
from training.fold_export import export_fold
from training.loop import fit
from training.recipes import load_recipe, recipe_names


def test_shipped_recipes_load_and_name_catalog_cards() -> None:
    names = recipe_names()
    assert set(TINY) == set(names)  # every shipped recipe is trained below
    for name in names:
        recipe = load_recipe(name)
        assert recipe.card["preprocessing"], name
        for role in recipe.roles:
            stage = recipe.for_stage(role)
            assert stage.network_config()["name"], name
    la = load_recipe("sipnet-left-atrium-mr")
    assert la.card["id"] == "sipnet-left-atrium-mr"
    assert la.card["labels"][0]["value"] == 1 and la.card["modality"] == "MR"
    assert la.card["preprocessing"]["intensity"]["method"] == "percentile_zscore"  # spike voxels do not pull it
    assert la.card["preprocessing"]["orientation"] == "LPS"  # the storage order of every LeftAtrium2018 case
    organ_only = load_recipe("raunet-left-atrium-mr-compact")  # null in card_overrides drops the tumour stage
    assert organ_only.roles == ["localizer", "liver"] and "tumour_patch_size" not in organ_only.card["inference"]


def test_overrides_are_yaml_typed_and_validated() -> None:
    recipe = load_recipe("conresnet-pancreas-ct", ["train.max_steps=7", "network.blocks=[1, 1, 1, 1, 1]"])
    assert recipe["train"]["max_steps"] == 7 and recipe.network_config()["blocks"] == [1, 1, 1, 1, 1]
    with pytest.raises(ValueError):
        load_recipe("no-such-recipe")
    with pytest.raises(ValueError):
        load_recipe("sipnet-prostate-mr", ["nonsense"])


@pytest.mark.parametrize("name", sorted(TINY))
def test_recipe_trains_exports_installs_and_segments(name: str, phantom_sets, tmp_path) -> None:
    kind, _ = TINY[name]
    data = phantom_sets[kind]
    recipe = load_recipe(name, tiny_overrides(name, steps=2))
    out = tmp_path / "exp"
    for role in recipe.roles:
        result = fit(recipe.for_stage(role), data, 0, out, device="cpu", progress=False)
        assert result.step == 2 and np.isfinite(result.last_loss)
        assert (out / "fold_0" / role / "best.pt").is_file()
    card_path, weights_path = export_fold(recipe, out / "fold_0", tmp_path / "export", dtype="float16")
    card = json.loads(card_path.read_text())
    assert card["weights"]["dtype"] == "float16" and set(card["networks"]) == set(recipe.roles)
    assert card["preprocessing"] == recipe.card["preprocessing"]
    assert "validation" in card["weights"]["provenance"]
    store = ModelStore(tmp_path / "store")
    installed = store.install_card(card_path, weights_path)
    image_path = sorted((data / "imagesTr").iterdir())[0]
    result = segment(image_path, installed, store, device="cpu", maps=False)
    assert result.label.GetSize() == sitk.ReadImage(str(image_path)).GetSize()


def test_cli_fit_then_evaluate(phantom_sets, tmp_path, capsys) -> None:
    """fit -> export -> ``medseg install-weights --card`` and ``medseg segment`` unchanged -> evaluate."""
    name = "sipnet-prostate-mr"
    data = phantom_sets["prostate"]
    sets = [f"--set={s}" for s in tiny_overrides(name, steps=2)]
    out = tmp_path / "exp"
    assert main(["fit", "--recipe", name, "--data", str(data), "--fold", "0", "--out", str(out),
                 "--device", "cpu", "--no-progress", *sets]) == 0
    export = out / "fold_0" / "export"
    card_path, weights_path = export / f"{name}.json", export / f"{name}.safetensors"
    assert card_path.is_file() and (out / "splits.json").is_file()
    val_cases = json.loads((out / "splits.json").read_text())[0]["val"]
    provenance = json.loads(card_path.read_text())["weights"]["provenance"]
    assert provenance["val_cases"] == val_cases and provenance["fold"] == 0
    assert provenance["recipe_changes"] == tiny_overrides(name, steps=2)  # how the run changed the recipe, kept
    assert provenance["validation"]["main"]["metrics"]["dice"] is not None

    store = tmp_path / "store"
    assert medseg(["--model-dir", str(store), "install-weights", "--card", str(card_path), str(weights_path)]) == 0
    image = data / "imagesTr" / f"{val_cases[0]}.nii.gz"
    assert medseg(["--model-dir", str(store), "segment", str(image), "--model", name, "--device", "cpu",
                   "--output-dir", str(tmp_path / "seg"), "--maps", "none"]) == 0
    assert any((tmp_path / "seg").rglob("result.json"))

    # the installed card's preprocessing reproduces, bit for bit, the arrays the run trained on
    installed = ModelStore(store).card(name)
    case = load_dataset(data).case(val_cases[0])
    cached = load_volumes([case], installed.preprocessing, out / "cache", write=False)[0]
    assert (out / "cache" / spec_hash(installed.preprocessing) / f"{case.case_id}.npz").is_file()
    np.testing.assert_array_equal(cached.image, preprocess(read_case_image(case), installed.preprocessing)[0])

    # evaluate: with the experiment's splits.json, and from the card's provenance alone
    for extra, target in ((["--splits-dir", str(out)], "eval"), ([], "eval_prov")):
        assert main(["evaluate", "--model-dir", str(export), "--data", str(data), "--fold", "0",
                     "--out", str(tmp_path / target), "--device", "cpu", *extra]) == 0
        lines = (tmp_path / target / "per_case.csv").read_text().splitlines()
        assert lines[0].startswith("case,class,name,dice,iou,voe,rvd,hd95,assd") and len(lines) == 2
        assert lines[1].split(",")[0] == val_cases[0]
        summary = json.loads((tmp_path / target / "summary.json").read_text())
        assert summary["cases"] == 1 and set(summary["classes"]["prostate"]) == {"dice", "iou", "voe", "rvd", "hd95", "assd"}
    assert "dice" in capsys.readouterr().out
    # an inference setting changed for the evaluation (as medseg segment --inference) lands in its own folder
    assert main(["evaluate", "--model-dir", str(export), "--data", str(data), "--fold", "0", "--splits-dir", str(out),
                 "--device", "cpu", "--inference", "max_window_voxels=10"]) == 2
    assert main(["evaluate", "--model-dir", str(export), "--data", str(data), "--fold", "0", "--splits-dir", str(out),
                 "--device", "cpu", "--inference", "max_window_voxels=1000000", "--out", str(tmp_path / "eval_whole")]) == 0
    assert json.loads((tmp_path / "eval_whole" / "summary.json").read_text())["cases"] == 1


@pytest.mark.shared_data
def test_rendered_real_prostate_labels_train_and_export(shared_data, tmp_path) -> None:
    """T2-like phantoms around real MSD prostate labels (PZ + TZ -> gland) feed the SIP-Net recipe."""
    from dataset_phantoms import render_prostate_dataset

    labels = shared_data / "ProstateMSDLabels" / "labelsTr"
    if not labels.is_dir():
        pytest.skip(f"{labels} is absent")
    data = render_prostate_dataset(labels, tmp_path / "rendered", max_cases=2, seed=0)
    name = "sipnet-prostate-mr"
    recipe = load_recipe(name, TINY[name][1][:3] + ["card_overrides.preprocessing.target_spacing=[1.25, 1.25, 3.0]",
                                                    "train.max_steps=2", "train.num_workers=0"])
    result = fit(recipe, data, "all", tmp_path / "exp", device="cpu", progress=False)
    assert result.step == 2 and np.isfinite(result.last_loss)
    card_path, _ = export_fold(recipe, tmp_path / "exp" / "fold_all", tmp_path / "export")
    assert json.loads(card_path.read_text())["weights"]["provenance"]["label_mapping"] == "prostate_gland"
