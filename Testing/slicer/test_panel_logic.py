"""The module panel's Qt-free logic against the real MRML (slicer-core) and the real ``medseg`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML) is not installed")

from model_cards import install_random_model, tiny_card  # noqa: E402
from volumes import phantom_volume  # noqa: E402

from MedSegAttentionLib.scene import load_volume  # noqa: E402
from MedSegAttentionLib.slicer_support.child_reports import parse_model_list  # noqa: E402
from MedSegAttentionLib.slicer_support.panel_logic import DictSettings, PanelLogic  # noqa: E402
from MedSegAttentionLib.slicer_support.process_runner import ExitStatus  # noqa: E402


def test_preferences_and_level_tables_live_in_the_settings(tmp_path: Path) -> None:
    store = DictSettings()
    logic = PanelLogic(store, slicer.vtkMRMLScene(), tmp_path)
    assert logic.preferredDevice() == "auto" and logic.modelFolderSetting() == ""
    logic.setPreferredDevice("mps")
    logic.setPreferredDevice("tpu")  # not a choice: back to auto
    assert logic.preferredDevice() == "auto"
    logic.setPreferredDevice("mps")
    logic.setModelFolderSetting(str(tmp_path / "models"))
    again = PanelLogic(store, slicer.vtkMRMLScene(), tmp_path)  # a new session reads what was saved
    assert again.preferredDevice() == "mps" and again.modelFolder() == tmp_path / "models"
    assert again.cachedLevelTable("anunet-cpu-abc") is None
    table = {"model": "anunet-liver-ct", "levels": [{"level": "L1", "parameters": 1, "ms_per_slice": 2.0}]}
    again.storeLevelTable("anunet-cpu-abc", table)
    assert PanelLogic(store, None).cachedLevelTable("anunet-cpu-abc") == table


@pytest.mark.slow
def test_model_list_install_and_a_run_through_the_real_cli(tmp_path: Path) -> None:
    store, model_id, weights = install_random_model(tmp_path / "store", tiny_card("tiny-panel-mr"))
    scene = slicer.vtkMRMLScene()
    logic = PanelLogic(DictSettings({"MedSegAttention/ModelFolder": str(store.root)}), scene, tmp_path / "work")
    (tmp_path / "work").mkdir()
    runner = logic.startModelList()
    runner.wait(timeout_s=120)
    assert runner.status is ExitStatus.SUCCESS, runner.stderr_tail()
    models = {m["id"]: m for m in parse_model_list(runner.stdout_text())}
    assert models[model_id]["installed"] is True and models["sipnet-left-atrium-mr"]["bundled"] is True

    refused = logic.startInstallWeights(modelId=model_id, weightsPath=str(tmp_path / "missing.safetensors"))
    refused.wait(timeout_s=120)
    assert refused.status is ExitStatus.MODEL_PROBLEM

    volume, _ = phantom_volume(size_zyx=(8, 24, 20))
    path = tmp_path / "case.nrrd"
    sitk.WriteImage(volume, str(path))
    node = load_volume(scene, path, name="MR")
    imported = logic.process(node, model_id, device="cpu", tta=False)
    assert imported.segmentation_node.GetScene() is scene
    assert sorted(imported.map_nodes) == ["attention_1", "attention_2", "attention_3"]
    logic.setMapOpacity(0.3)
    logic.setMapThreshold(0.2)
    with pytest.raises(ValueError, match="Select a model"):
        logic.startSegmentation(node, "")
    assert json.loads(json.dumps(logic.settings.values))  # settings stay plain JSON-able values
