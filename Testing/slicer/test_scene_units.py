"""Smaller checks of the scene package: result.json validation, colour maps, transactions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML) is not installed")

import slicer_scenarios  # noqa: E402
from MedSegAttentionLib.scene import ResultFormatError, SceneTransaction, read_result  # noqa: E402
from MedSegAttentionLib.scene import heatmaps  # noqa: E402


@pytest.fixture
def result_folder(tmp_path: Path) -> Path:
    image = slicer_scenarios.write_input(tmp_path / "input.nrrd")
    return slicer_scenarios.write_result_folder(tmp_path / "result", image)


def _edit(folder: Path, **changes: object) -> None:
    meta = json.loads((folder / "result.json").read_text())
    meta.update(changes)
    (folder / "result.json").write_text(json.dumps(meta))


def test_read_result_resolves_files(result_folder: Path) -> None:
    result = read_result(result_folder)
    assert result.segmentation_path == (result_folder / "segmentation.nrrd").resolve()
    assert [m.name for m in result.maps] == ["attention_1", "saliency"]
    assert [label.value for label in result.labels] == [1, 3]
    assert result.labels[0].terminology["type"].meaning == "Liver"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 99}, "not supported"),
        ({"segmentation": "../../etc/passwd"}, "outside the result folder"),
        ({"maps": [{"name": "x", "file": "maps/missing.nrrd"}]}, "missing"),
        ({"labels": [{"value": 0, "name": "bg"}]}, "background"),
        ({"labels": [{"value": 1, "name": "a", "color": [2, 0, 0]}]}, "outside [0, 1]"),
        ({"labels": [{"value": 1, "name": "a"}, {"value": 1, "name": "b"}]}, "duplicate"),
    ],
)
def test_read_result_rejects_bad_descriptions(result_folder: Path, changes: dict, message: str) -> None:
    _edit(result_folder, **changes)
    with pytest.raises(ResultFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_result(result_folder)


def test_missing_result_json(tmp_path: Path) -> None:
    with pytest.raises(ResultFormatError, match="no result.json"):
        read_result(tmp_path)


def test_own_inferno_is_created_once_and_slicer_builtin_preferred() -> None:
    scene = slicer.vtkMRMLScene()
    own = heatmaps.inferno_color_node(scene)
    assert own.GetNumberOfColors() == 256
    assert heatmaps.inferno_color_node(scene) is own  # reused, not duplicated
    low, high = [0.0] * 4, [0.0] * 4
    own.GetColor(0, low)
    own.GetColor(255, high)
    assert sum(low[:3]) < 0.1 and sum(high[:3]) > 2.5  # dark to bright

    builtin = slicer.vtkMRMLColorTableNode()
    builtin.SetSingletonTag("FileInferno.txt")  # the ID Slicer's colour logic gives its Inferno table
    builtin.SetName("Inferno")
    scene.AddNode(builtin)
    assert builtin.GetID() == heatmaps.SLICER_INFERNO_ID
    assert heatmaps.inferno_color_node(scene) is builtin


def test_transaction_rolls_back_on_exception() -> None:
    scene = slicer.vtkMRMLScene()
    kept = scene.AddNode(slicer.vtkMRMLScalarVolumeNode())
    with pytest.raises(RuntimeError):
        with SceneTransaction(scene):
            scene.AddNode(slicer.vtkMRMLScalarVolumeNode())
            scene.AddNode(slicer.vtkMRMLSegmentationNode())
            raise RuntimeError("boom")
    assert [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())] == [kept.GetID()]
    with SceneTransaction(scene) as transaction:
        added = scene.AddNode(slicer.vtkMRMLScalarVolumeNode())
    assert transaction.added_node_ids == [added.GetID()]
    assert scene.GetNodeByID(added.GetID()) is added


def test_slice_views_show_map_over_input(result_folder: Path) -> None:
    scene = slicer.vtkMRMLScene()
    composite = scene.AddNode(slicer.vtkMRMLSliceCompositeNode())
    background = scene.AddNode(slicer.vtkMRMLScalarVolumeNode())
    heat = scene.AddNode(slicer.vtkMRMLScalarVolumeNode())
    heat.SetAttribute(heatmaps.MAP_NAME_ATTRIBUTE, "attention_1")
    heatmaps.show_map_in_slice_views(scene, heat, background, 0.4)
    assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()) == (background.GetID(), heat.GetID())
    assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    heatmaps.set_map_opacity(scene, 0.7)
    assert composite.GetForegroundOpacity() == pytest.approx(0.7)
    heatmaps.show_map_in_slice_views(scene, None, None, 0.7)
    assert composite.GetForegroundVolumeID() is None


def test_maps_change_only_the_map_layer_and_hiding_restores_the_users_views() -> None:
    """A PET/CT fusion (CT behind, PET in front at 0.3) survives showing, switching and hiding a map."""
    scene = slicer.vtkMRMLScene()
    fused, plain = (scene.AddNode(slicer.vtkMRMLSliceCompositeNode()) for _ in range(2))
    fused.SetLayoutName("Red")
    plain.SetLayoutName("Green")
    ct, pet, heat, other = (scene.AddNode(slicer.vtkMRMLScalarVolumeNode()) for _ in range(4))
    for node, name in ((heat, "attention_1"), (other, "uncertainty")):
        node.SetAttribute(heatmaps.MAP_NAME_ATTRIBUTE, name)
    fused.SetBackgroundVolumeID(ct.GetID())
    fused.SetForegroundVolumeID(pet.GetID())
    fused.SetForegroundOpacity(0.3)
    heatmaps.set_map_opacity(scene, 0.9)  # the slider before any map is shown: not the user's fusion
    assert fused.GetForegroundOpacity() == pytest.approx(0.3)
    heatmaps.show_map_in_slice_views(scene, heat, ct, 0.5)
    heatmaps.show_map_in_slice_views(scene, other, ct, 0.6)  # switching keeps the first saved state
    assert fused.GetBackgroundVolumeID() == ct.GetID() and fused.GetForegroundVolumeID() == other.GetID()
    assert plain.GetBackgroundVolumeID() == ct.GetID()  # an empty view gets the input behind the map
    heatmaps.show_map_in_slice_views(scene, None, ct, 0.6)
    assert (fused.GetBackgroundVolumeID(), fused.GetForegroundVolumeID()) == (ct.GetID(), pet.GetID())
    assert fused.GetForegroundOpacity() == pytest.approx(0.3)
    assert plain.GetForegroundVolumeID() is None and fused.GetAttribute(heatmaps.SAVED_OPACITY) is None


def test_empty_label_gets_an_empty_segment_and_unknown_values_warn(tmp_path: Path) -> None:
    import numpy as np
    import SimpleITK as sitk

    from MedSegAttentionLib.scene import import_result, load_volume

    image = slicer_scenarios.write_input(tmp_path / "input.nrrd")
    folder = slicer_scenarios.write_result_folder(tmp_path / "result", image)
    labels = slicer_scenarios.label_array()
    labels[labels == 3] = 7  # a value result.json does not describe; label 3 is now absent
    seg = sitk.GetImageFromArray(labels)
    seg.CopyInformation(image)
    sitk.WriteImage(seg, str(folder / "segmentation.nrrd"))
    _edit(folder, labels=[*slicer_scenarios.LABELS[:1], {"value": 3, "name": "tumour"}], maps=[])
    scene = slicer.vtkMRMLScene()
    volume = load_volume(scene, tmp_path / "input.nrrd")
    imported = import_result(scene, folder, volume)
    segmentation = imported.segmentation_node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(2)] == ["liver", "tumour"]
    assert any("[7]" in w for w in imported.warnings)
    assert imported.map_nodes == {}
    assert np.count_nonzero(labels == 1) > 0


def test_terminology_string_carries_every_code_of_the_catalog_card(tmp_path: Path) -> None:
    """The RA-UNet card's tumour label names its anatomic region (liver) with the card's snake_case key;
    Slicer's serialized entry must hold the region's code, compared with the card, not with our reader."""
    from MedSegAttentionLib.modelstore.cards import builtin_cards
    from MedSegAttentionLib.scene.result import _label
    from MedSegAttentionLib.scene.segmentation import terminology_entry_string

    card = next(c for c in builtin_cards() if c.id == "raunet-liver-tumour-ct")
    tumour = next(label for label in card.labels if "anatomic_region" in label.get("terminology", {}))
    text = terminology_entry_string(_label(tumour, 0))
    for concept in tumour["terminology"].values():
        assert f"{concept['scheme']}^{concept['code']}^{concept['meaning']}" in text, text
    region = tumour["terminology"]["anatomic_region"]
    parsed = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(text, parsed)
    assert parsed.GetRegionObject().GetCodeValue() == region["code"]
    assert parsed.GetTypeObject().GetCodeMeaning() == tumour["terminology"]["type"]["meaning"]


def test_results_are_found_again_in_a_reloaded_scene_with_their_maps(tmp_path: Path) -> None:
    """After a scene is saved and loaded, the panel rebuilds the map list of the newest run from the scene
    (node attributes and a map -> segmentation reference), and knows which volumes are heat maps."""
    from MedSegAttentionLib.scene import import_result, load_volume, results_in_scene
    from MedSegAttentionLib.slicer_support.panel_logic import DictSettings, PanelLogic

    image = slicer_scenarios.write_input(tmp_path / "input.nrrd")
    folder = slicer_scenarios.write_result_folder(tmp_path / "result", image)
    scene = slicer.vtkMRMLScene()
    volume = load_volume(scene, tmp_path / "input.nrrd")
    first, second = import_result(scene, folder, volume), import_result(scene, folder, volume)
    assert second.map_titles == {info.name: info.title for info in read_result(folder).maps} and second.map_titles

    scene.SetURL(str(tmp_path / "saved.mrml"))
    assert scene.Commit()
    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(tmp_path / "saved.mrml"))
    reloaded.Import()
    results = results_in_scene(reloaded)
    assert [r.segmentation_node.GetID() for r in results] == [first.segmentation_node.GetID(), second.segmentation_node.GetID()]
    newest = PanelLogic(DictSettings(), reloaded).latestResult()
    assert newest.segmentation_node.GetID() == second.segmentation_node.GetID()
    assert newest.map_titles == second.map_titles
    assert {name: node.GetID() for name, node in newest.map_nodes.items()} == {
        name: node.GetID() for name, node in second.map_nodes.items()}
    hidden = PanelLogic(DictSettings(), reloaded).evidenceMapNodeIDs()
    expected = {node.GetID() for result in (first, second) for node in result.map_nodes.values()}
    assert set(hidden) == expected and volume.GetID() not in hidden
    assert PanelLogic(DictSettings(), slicer.vtkMRMLScene()).latestResult() is None


def test_a_raw_map_is_coloured_over_its_own_range_and_the_threshold_is_a_fraction_of_it(tmp_path: Path) -> None:
    """result.json's ``range`` sets a map's window, legend and threshold (RSTN's raw saliency weights);
    a map without one keeps 0-1; a malformed range is refused."""
    from MedSegAttentionLib.scene import import_result, load_volume

    image = slicer_scenarios.write_input(tmp_path / "input.nrrd")
    folder = slicer_scenarios.write_result_folder(tmp_path / "result", image)
    meta = json.loads((folder / "result.json").read_text())
    meta["maps"][1]["range"] = [-1.5, 2.5]
    (folder / "result.json").write_text(json.dumps(meta))
    assert [m.value_range for m in read_result(folder).maps] == [(0.0, 1.0), (-1.5, 2.5)]
    scene = slicer.vtkMRMLScene()
    imported = import_result(scene, folder, load_volume(scene, tmp_path / "input.nrrd"), map_threshold=0.25)
    plain = imported.map_nodes["attention_1"].GetScalarVolumeDisplayNode()
    raw = imported.map_nodes["saliency"].GetScalarVolumeDisplayNode()
    assert (plain.GetWindowLevelMin(), plain.GetWindowLevelMax(), plain.GetLowerThreshold()) == pytest.approx((0.0, 1.0, 0.25))
    assert (raw.GetWindowLevelMin(), raw.GetWindowLevelMax(), raw.GetLowerThreshold()) == pytest.approx((-1.5, 2.5, -0.5))
    heatmaps.set_map_threshold(scene, 0.5)
    assert (plain.GetLowerThreshold(), raw.GetLowerThreshold()) == pytest.approx((0.5, 0.5))
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(imported.map_nodes["saliency"])
    assert legend.GetLabelFormat() == "%.3g"
    # a [0, 1] map stored as whole percent: window and threshold in percent, the legend says so
    meta["maps"][0].update(range=[0.0, 100.0], unit="percent")
    (folder / "result.json").write_text(json.dumps(meta))
    percent = import_result(scene, folder, load_volume(scene, tmp_path / "input.nrrd"), map_threshold=0.25).map_nodes["attention_1"]
    display = percent.GetScalarVolumeDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax(), display.GetLowerThreshold()) == pytest.approx((0.0, 100.0, 25.0))
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(percent)
    assert legend.GetLabelFormat() == "%.0f %%" and legend.GetTitleText().endswith("(in %: 100 % = 1)")
    assert percent.GetAttribute(heatmaps.MAP_UNIT_ATTRIBUTE) == "percent"
    meta["maps"][0]["unit"] = "permille"
    (folder / "result.json").write_text(json.dumps(meta))
    with pytest.raises(ResultFormatError, match="unit"):
        read_result(folder)
    meta["maps"][0].pop("unit")
    meta["maps"][1]["range"] = [2.0, 2.0]
    (folder / "result.json").write_text(json.dumps(meta))
    with pytest.raises(ResultFormatError, match="low < high"):
        read_result(folder)
