"""The module panel's Qt-free logic against the real MRML (slicer-core) and the real ``medseg`` CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML) is not installed")

from model_cards import install_random_model, tiny_card  # noqa: E402
from slicer_bundled_model import run_bundled_model, segment_labelmap  # noqa: E402 - shared with the self-test
from volumes import phantom_volume  # noqa: E402

import vtk  # noqa: E402

from MedSegAttentionLib.scene import heatmaps, load_volume  # noqa: E402
from MedSegAttentionLib.scene.run import RunState  # noqa: E402
from MedSegAttentionLib.slicer_support.child_reports import parse_model_list  # noqa: E402
from MedSegAttentionLib.slicer_support.level_chooser import LevelChooser, level_key  # noqa: E402
from MedSegAttentionLib.slicer_support.panel_logic import DictSettings, PanelLogic  # noqa: E402
from MedSegAttentionLib.slicer_support.process_runner import ExitStatus, ProcessRunner  # noqa: E402


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


def _panel_with_a_random_model(tmp_path: Path, model_id: str):  # noqa: ANN202
    """A panel logic on a new scene whose model folder holds a tiny random model: (store, id, logic, scene)."""
    store, model_id, _ = install_random_model(tmp_path / "store", tiny_card(model_id))
    scene = slicer.vtkMRMLScene()
    logic = PanelLogic(DictSettings({"MedSegAttention/ModelFolder": str(store.root)}), scene, tmp_path / "work")
    (tmp_path / "work").mkdir()
    return store, model_id, logic, scene


@pytest.mark.slow
def test_model_list_install_and_a_run_through_the_real_cli(tmp_path: Path) -> None:
    store, model_id, logic, scene = _panel_with_a_random_model(tmp_path, "tiny-panel-mr")
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
    # maps in [0, 1] arrive as whole percent in one byte, and the legend says so
    attention = imported.map_nodes["attention_3"]
    assert attention.GetImageData().GetScalarType() == vtk.VTK_UNSIGNED_CHAR
    assert heatmaps.recorded_value_range(attention) == (0.0, 100.0)
    assert slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(attention).GetLabelFormat() == "%.0f %%"
    # the evidence-map choice: its size told beforehand (3 one-byte maps of 20 x 24 x 8), and a run without maps
    assert logic.mapMemoryText(node, models[model_id], False, True) == "3 map(s), about 11.5 kB for this volume (20 x 24 x 8)"
    assert logic.mapMemoryText(node, models[model_id], False, False).startswith("Evidence maps off")
    plain = logic.process(node, model_id, device="cpu", tta=False, computeMaps=False)
    assert plain.map_nodes == {} and plain.segmentation_node.GetSegmentation().GetNumberOfSegments() == 1
    # the output choice: a run into an earlier segmentation replaces it (same node, its old maps gone)
    count = scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems()
    again = logic.process(node, model_id, device="cpu", tta=False, outputSegmentation=imported.segmentation_node)
    assert again.segmentation_node is imported.segmentation_node
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == count
    assert all(scene.GetNodeByID(m.GetID()) is None for m in imported.map_nodes.values())
    assert logic.latestResult().map_nodes.keys() == again.map_nodes.keys()
    assert logic.inputVolumeOf(again) is node  # what the Segment Editor gets as its source volume
    with pytest.raises(ValueError, match="Select a model"):
        logic.startSegmentation(node, "")
    # several volumes with the same settings, each into its own segmentation (a volume given twice runs once)
    second = load_volume(scene, path, name="MR second series")
    batch = logic.startBatchSegmentation([node, second, node], model_id, device="cpu", tta=False, computeMaps=False)
    assert batch.wait(timeout_s=300) is RunState.SUCCEEDED, batch.message
    assert [logic.inputVolumeOf(result) for result in batch.results] == [node, second]
    with pytest.raises(ValueError, match="Select an input volume"):
        logic.startBatchSegmentation([], model_id)
    assert json.loads(json.dumps(logic.settings.values))  # settings stay plain JSON-able values


def test_segment_button_starts_the_first_install_instead_of_staying_greyed() -> None:
    state = PanelLogic.applyButtonState
    ready = {"id": "m", "installed": True}
    assert state(False, ready, True)[:2] == (False, "Select an input volume.")
    enabled, tip, installs = state(True, None, False)  # first run: no packages, so no model list either
    assert enabled and installs and "PyTorch" in tip
    assert state(True, None, True) == (False, "Select a model.", False)
    assert state(True, {"id": "m", "installed": False}, True)[0] is False
    assert state(True, ready, True) == (True, "Run the model on the input volume.", False)


# ------------------------------------------------------------------ the level chooser (ANU-Net level table)
def _levels_process(table: dict | None, exit_code: int = 0) -> ProcessRunner:
    line = "" if table is None else f"print('medseg-levels ' + {json.dumps(json.dumps(table))}, flush=True); "
    runner = ProcessRunner([sys.executable, "-c", line + f"import sys; sys.exit({exit_code})"], expects_result=False)
    runner.start()
    return runner


class _MeasuringLogic:
    """The panel logic's level-table part (PanelLogic's settings) with the measurement a short real process."""

    def __init__(self, table: dict | None, exit_code: int = 0) -> None:
        self.panel = PanelLogic(DictSettings(), None)
        self.table, self.exit_code, self.started = table, exit_code, []
        self.cachedLevelTable, self.storeLevelTable = self.panel.cachedLevelTable, self.panel.storeLevelTable

    def startLevelSpeed(self, modelId: str, device: str) -> ProcessRunner:  # noqa: N802,N803
        self.started.append((modelId, device))
        return _levels_process(self.table, self.exit_code)


ANUNET_ENTRY = {"id": "anunet-left-atrium-mr", "levels": ["L1", "L2", "L3", "L4"]}


def test_level_key_needs_a_model_with_levels_and_torch() -> None:
    torch_info = {"torch": "2.13.0"}
    key = level_key(ANUNET_ENTRY, "cpu", torch_info, "CPU: 2 cores")
    assert key.startswith("anunet-left-atrium-mr-cpu-")
    assert key != level_key(ANUNET_ENTRY, "cpu", torch_info, "CPU: 16 cores")  # other hardware, other table
    assert key != level_key(ANUNET_ENTRY, "cuda", torch_info, "CPU: 2 cores")
    assert level_key({"id": "sipnet-left-atrium-mr", "levels": []}, "cpu", torch_info, "x") is None
    assert level_key(ANUNET_ENTRY, "cpu", None, "x") is None  # device query not answered yet


def test_level_chooser_measures_once_caches_and_shows_errors() -> None:
    table = {"model": "anunet-left-atrium-mr", "levels": [{"level": "L1", "parameters": 26_000, "ms_per_slice": 3.0}]}
    logic = _MeasuringLogic(table)
    chooser = LevelChooser(logic)
    assert chooser.update("k1", "anunet-left-atrium-mr", "cpu", busy=False, can_measure=False) is None  # packages missing
    assert chooser.update("k1", "anunet-left-atrium-mr", "cpu", busy=True, can_measure=True) is None  # a run is going
    view = chooser.update("k1", "anunet-left-atrium-mr", "cpu", busy=False, can_measure=True)
    assert view.table is None and view.runner is not None and logic.started == [("anunet-left-atrium-mr", "cpu")]
    assert chooser.update("k2", "anunet-left-atrium-mr", "cuda", busy=False, can_measure=True) is None  # one at a time
    view.runner.wait(timeout_s=60)
    shown = chooser.finished(view.runner, "k1", current_key="k1")
    assert shown.table == table and logic.cachedLevelTable("k1") == table
    assert chooser.update("k1", "anunet-left-atrium-mr", "cpu", busy=False, can_measure=True) is None  # already shown
    again = LevelChooser(logic)  # a new panel: from the cache, no process
    assert again.update("k1", "anunet-left-atrium-mr", "cpu", busy=False, can_measure=False).table == table
    assert len(logic.started) == 1

    failing = _MeasuringLogic(None, exit_code=3)
    chooser = LevelChooser(failing)
    view = chooser.update("k3", "anunet-left-atrium-mr", "cpu", busy=False, can_measure=True)
    view.runner.wait(timeout_s=60)
    shown = chooser.finished(view.runner, "k3", current_key="k4")  # the user chose another device meanwhile
    assert shown.error.startswith("Could not measure the levels") and failing.cachedLevelTable("k3") is None
    assert chooser.key is None  # so the next update measures the new choice
    assert chooser.update("k4", "anunet-left-atrium-mr", "cuda", busy=False, can_measure=True).runner is not None


def _foreground_voxels(segmentation_node, reference) -> int:  # noqa: ANN001 - MRML nodes
    """Voxels of all segments together on the reference volume's grid."""
    return int((segment_labelmap(segmentation_node, reference) > 0).sum())


@pytest.mark.slow
def test_every_frame_of_a_sequence_through_the_real_cli(tmp_path: Path) -> None:
    """Each frame gets the result a run on that frame alone gives, and the result follows the browser."""
    _, model_id, logic, scene = _panel_with_a_random_model(tmp_path, "tiny-sequence-mr")
    logic.sequencesLogic = slicer.vtkSlicerSequencesLogic()
    logic.sequencesLogic.SetMRMLScene(scene)
    frames = []
    for seed in (0, 1):
        path = tmp_path / f"frame{seed}.nrrd"
        sitk.WriteImage(phantom_volume(size_zyx=(8, 24, 20), seed=seed)[0], str(path))
        frames.append(load_volume(scene, path, name=f"frame {seed}"))
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    for seed, frame in enumerate(frames):
        sequence.SetDataNodeAtValue(frame, str(seed))
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    logic.sequencesLogic.UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(sequence)
    assert logic.sequenceFrameCount(proxy) == 2 and logic.sequenceFrameCount(frames[0]) == 0
    alone = [_foreground_voxels(logic.process(frame, model_id, device="cpu", tta=False, computeMaps=False).segmentation_node, frame)
             for frame in frames]
    assert alone[0] != alone[1]  # the frames differ, so a proxy showing the wrong frame would be seen
    run = logic.startSequenceSegmentation(proxy, model_id, device="cpu", tta=False)
    assert run.wait(timeout_s=300) is RunState.SUCCEEDED, run.message
    assert run.message == "Done: 2 frame(s) segmented."
    result = run.imported
    assert sorted(result.map_nodes) == ["attention_1", "attention_2", "attention_3"]
    assert logic.inputVolumeOf(result) is proxy
    for node in result.map_nodes.values():  # the frames' maps arrive as whole percent; the proxies' legends say so
        assert heatmaps.recorded_value_range(node) == (0.0, 100.0)
        assert slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node).GetLabelFormat() == "%.0f %%"
    for item in (1, 0):
        browser.SetSelectedItemNumber(item)
        logic.sequencesLogic.UpdateProxyNodesFromSequences(browser)
        assert _foreground_voxels(result.segmentation_node, proxy) == alone[item]
    with pytest.raises(ValueError, match="not a frame of a sequence"):
        logic.startSequenceSegmentation(frames[0], model_id)


@pytest.mark.slow
def test_the_bundled_model_end_to_end_on_a_real_scan(shared_data, tmp_path: Path) -> None:
    """What the module's self-test does inside Slicer, here on a real LGE-MR case with its ground truth."""
    case = "la_38cws742"
    scene = slicer.vtkMRMLScene()
    volume = load_volume(scene, shared_data / "LeftAtrium2018" / "imagesTr" / f"{case}.nii.gz", name=case)
    truth = load_volume(scene, shared_data / "LeftAtrium2018" / "labelsTr" / f"{case}.nii.gz", labelmap=True)
    from vtk.util import numpy_support

    expected = numpy_support.vtk_to_numpy(truth.GetImageData().GetPointData().GetScalars()).reshape(
        tuple(reversed(truth.GetImageData().GetDimensions())))
    dice = run_bundled_model(scene, volume, tmp_path / "work", truth=expected)
    assert dice is not None and dice >= 0.85
