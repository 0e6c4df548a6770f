"""Every shipped recipe trains a few steps (tiny networks), exports, installs and segments a phantom."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import TINY, tiny_overrides
from MedSegAttentionLib.engine import segment
from MedSegAttentionLib.store import ModelStore
from training.cli import main
from training.exporting import export_fold
from training.loop import fit
from training.recipes import load_recipe, recipe_names


def test_shipped_recipes_load_and_name_catalog_cards() -> None:
    names = recipe_names()
    assert set(TINY) | {"sipnet-left-atrium-mr"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.card["preprocessing"], name
        for role in recipe.roles:
            stage = recipe.for_stage(role)
            assert stage.network_config()["name"], name
    la = load_recipe("sipnet-left-atrium-mr")
    assert la.card["id"] == "sipnet-left-atrium-mr"
    assert la.card["labels"][0]["value"] == 1 and la.card["modality"] == "MR"
    assert la.card["preprocessing"]["intensity"]["method"] == "zscore"


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
    name = "sipnet-prostate-mr"
    sets = [f"--set={s}" for s in tiny_overrides(name, steps=2)]
    out = tmp_path / "exp"
    assert main(["fit", "--recipe", name, "--data", str(phantom_sets["prostate"]), "--fold", "0", "--out", str(out),
                 "--device", "cpu", "--no-progress", *sets]) == 0
    export = out / "fold_0" / "export"
    assert (export / f"{name}.json").is_file() and (out / "splits.json").is_file()
    assert main(["evaluate", "--model-dir", str(export), "--data", str(phantom_sets["prostate"]), "--fold", "0",
                 "--splits-dir", str(out), "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    lines = (tmp_path / "eval" / "per_case.csv").read_text().splitlines()
    assert lines[0].startswith("case,class,name,dice,iou,voe,rvd,hd95,assd") and len(lines) == 2
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["cases"] == 1 and "prostate" in summary["classes"]
    assert "dice" in capsys.readouterr().out
