"""Scene scenarios shared by the CI tests (slicer-core) and the module's self-test inside Slicer.

Each scenario takes a scene and a scratch folder, builds its own data (an oblique, anisotropic
volume and a result folder per docs/result-format.md) and raises ``AssertionError`` on failure.
Needs SimpleITK and numpy, which Slicer ships.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from slicer_run_scenarios import RUN_SCENARIOS
from slicer_fixtures import (  # noqa: F401 - re-exported for the tests
    LABELS, MAPS, SIZE, _assert_close, _setup_input, expected_ijk_to_ras, label_array, map_array, scene_node_ids,
    write_input, write_result_folder,
)

from MedSegAttentionLib.scene import heatmaps, hierarchy, import_result, ijk_to_ras_array, write_volume
from MedSegAttentionLib.scene.heatmaps import DEFAULT_THRESHOLD
from MedSegAttentionLib.scene.segmentation import show_in_3d, terminology_entry_string
from MedSegAttentionLib.scene.result import read_result

def scenario_geometry_of_loaded_volume(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """Reading an oblique, anisotropic NRRD gives the IJK-to-RAS the LPS header implies."""
    volume, image, _ = _setup_input(scene, workdir)
    _assert_close(ijk_to_ras_array(volume), expected_ijk_to_ras(image), "IJK-to-RAS of the loaded input")
    # One voxel, end to end: ITK's physical point (LPS) mapped to RAS equals MRML's IJK-to-RAS.
    index = (SIZE[0] - 2, 1, SIZE[2] - 1)
    lps = np.array(image.TransformIndexToPhysicalPoint(index))
    ras = ijk_to_ras_array(volume) @ np.array([*index, 1.0])
    _assert_close(ras[:3], lps * np.array([-1, -1, 1]), "voxel position")
    if tuple(volume.GetImageData().GetDimensions()) != SIZE:
        raise AssertionError(f"dimensions {volume.GetImageData().GetDimensions()} != {SIZE}")


def scenario_write_input_for_cli(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """The NRRD handed to the CLI has the file geometry (LPS) and voxels of the input node."""
    volume, image, _ = _setup_input(scene, workdir)
    written = sitk.ReadImage(str(write_volume(volume, workdir / "to_cli" / "input.nrrd")))
    _assert_close(np.array(written.GetDirection()), np.array(image.GetDirection()), "direction")
    _assert_close(np.array(written.GetOrigin()), np.array(image.GetOrigin()), "origin")
    _assert_close(np.array(written.GetSpacing()), np.array(image.GetSpacing()), "spacing")
    if not np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(image)):
        raise AssertionError("voxel values changed on the way to the CLI")


def _segment_array(segmentation_node: "slicer.vtkMRMLSegmentationNode", segment_id: str,
                   reference: "slicer.vtkMRMLScalarVolumeNode") -> np.ndarray:
    """A segment as a (K, J, I) 0/1 array on the reference grid; checks its geometry on the way."""
    from vtk.util import numpy_support

    oriented = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentation_node, segment_id, oriented, False
    )
    matrix = vtk.vtkMatrix4x4()
    oriented.GetImageToWorldMatrix(matrix)
    image_to_world = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    _assert_close(image_to_world, ijk_to_ras_array(reference), f"geometry of segment {segment_id}")
    full = np.zeros(tuple(reversed(SIZE)), dtype=np.uint8)
    extent = oriented.GetExtent()
    if extent[1] < extent[0]:
        return full
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    values = numpy_support.vtk_to_numpy(oriented.GetPointData().GetScalars()).reshape(tuple(reversed(dims)))
    # Segments share label-map layers; this segment's voxels carry its layer label value.
    layer_value = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    full[extent[4]:extent[5] + 1, extent[2]:extent[3] + 1, extent[0]:extent[1] + 1] = values == layer_value
    return full


def scenario_import_result(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """Segments (names, colours, terminology, voxels, geometry), heat maps (grid, display), hierarchy."""
    volume, image, study = _setup_input(scene, workdir)
    folder = write_result_folder(workdir / "result", image)
    imported = import_result(scene, folder, volume)
    seg_node = imported.segmentation_node
    segmentation = seg_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() != len(LABELS):
        raise AssertionError(f"{segmentation.GetNumberOfSegments()} segments, expected {len(LABELS)}")
    if seg_node.GetNodeReferenceID(seg_node.GetReferenceImageGeometryReferenceRole()) != volume.GetID():
        raise AssertionError("the segmentation's reference geometry is not the input volume")
    if seg_node.GetDisplayNode() is None:
        raise AssertionError("the segmentation has no display node")
    description = read_result(folder)
    expected_labels = label_array()
    for index, label in enumerate(description.labels):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        if segment.GetName() != label.name:
            raise AssertionError(f"segment {index} is named {segment.GetName()!r}, expected {label.name!r}")
        _assert_close(np.array(segment.GetColor()), np.array(label.color), f"colour of {label.name}")
        tag = vtk.reference("")
        segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
        tag = str(tag)
        if not tag or tag != terminology_entry_string(label):
            raise AssertionError(f"terminology tag of {label.name} is {tag!r}")
        parsed = slicer.vtkSlicerTerminologyEntry()
        if not slicer.vtkSlicerTerminologiesModuleLogic().DeserializeTerminologyEntry(tag, parsed):
            raise AssertionError(f"Slicer cannot parse the terminology tag {tag!r}")
        type_code = label.terminology["type"]
        if (parsed.GetTypeObject().GetCodeValue(), parsed.GetTypeObject().GetCodeMeaning()) != (type_code.code, type_code.meaning):
            raise AssertionError(f"terminology type of {label.name} did not survive: {tag!r}")
        if not np.array_equal(_segment_array(seg_node, segment_id, volume), expected_labels == label.value):
            raise AssertionError(f"voxels of segment {label.name!r} differ from label {label.value} in the file")

    if set(imported.map_nodes) != {name for name, _ in MAPS}:
        raise AssertionError(f"maps {sorted(imported.map_nodes)} != {[n for n, _ in MAPS]}")
    for index, (name, title) in enumerate(MAPS):
        node = imported.map_nodes[name]
        _assert_close(ijk_to_ras_array(node), ijk_to_ras_array(volume), f"IJK-to-RAS of map {name}")
        if title not in node.GetName() or volume.GetName() not in node.GetName():
            raise AssertionError(f"map node name {node.GetName()!r} does not say what it is")
        from vtk.util import numpy_support

        values = numpy_support.vtk_to_numpy(node.GetImageData().GetPointData().GetScalars())
        if not np.allclose(values.reshape(tuple(reversed(SIZE))), map_array(index)):
            raise AssertionError(f"values of map {name} changed on import")
        display = node.GetScalarVolumeDisplayNode()
        color = display.GetColorNode()
        if color is None or "nferno" not in color.GetName():
            raise AssertionError(f"map {name} colour node is {color and color.GetName()!r}, expected Inferno")
        if display.GetAutoWindowLevel() or (display.GetWindowLevelMin(), display.GetWindowLevelMax()) != (0.0, 1.0):
            raise AssertionError(f"map {name} window is {display.GetWindowLevelMin()}..{display.GetWindowLevelMax()}")
        if not display.GetApplyThreshold() or abs(display.GetLowerThreshold() - DEFAULT_THRESHOLD) > 1e-6:
            raise AssertionError(f"map {name} does not hide values below {DEFAULT_THRESHOLD}")
        if node.GetImageData().GetScalarType() != vtk.VTK_FLOAT:
            raise AssertionError(f"map {name} is {node.GetImageData().GetScalarTypeAsString()}, not a float volume")
        legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node)
        if legend is None or legend.GetTitleText() != title or legend.GetVisibility():
            raise AssertionError(f"map {name} needs a hidden colour legend titled {title!r}")

    for node in [seg_node, *imported.map_nodes.values()]:
        if hierarchy.item_parent_of(scene, node) != study:
            raise AssertionError(f"{node.GetName()} is not in the input's study")
    if "test warning" not in imported.warnings:
        raise AssertionError(f"warnings from result.json were lost: {imported.warnings}")


def _slice_views(scene: "slicer.vtkMRMLScene", names: tuple[str, ...] = ("Red", "Yellow")) -> list:
    """The scene's slice-view composite nodes (inside Slicer: the layout's); a bare scene gets two."""
    existing = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    if existing.GetNumberOfItems():
        return [existing.GetItemAsObject(i) for i in range(existing.GetNumberOfItems())]
    composites = []
    for name in names:
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        composites.append(scene.AddNode(composite))  # a singleton: AddNode returns the node in the scene
    return composites


def scenario_heat_map_switching(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """Map by map: input behind, the chosen map in front at the chosen opacity, only its legend visible;
    hiding the map gives the views back as they were."""
    volume, image, _ = _setup_input(scene, workdir)
    views = _slice_views(scene)
    imported = import_result(scene, write_result_folder(workdir / "result", image), volume)
    legends = {name: slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node) for name, node in imported.map_nodes.items()}
    before = {view.GetID(): (view.GetForegroundVolumeID(), view.GetForegroundOpacity()) for view in views}
    for shown in [*imported.map_nodes, None]:
        map_node = imported.map_nodes.get(shown) if shown else None
        heatmaps.show_map_in_slice_views(scene, map_node, volume, 0.35)
        for view in views:
            expected_front = map_node.GetID() if map_node is not None else before[view.GetID()][0]
            if (view.GetBackgroundVolumeID(), view.GetForegroundVolumeID()) != (volume.GetID(), expected_front):
                raise AssertionError(f"{view.GetLayoutName()} shows {view.GetBackgroundVolumeID()} / "
                                     f"{view.GetForegroundVolumeID()}, expected {volume.GetID()} / {expected_front}")
            expected_opacity = 0.35 if map_node is not None else before[view.GetID()][1]
            if abs(view.GetForegroundOpacity() - expected_opacity) > 1e-9:
                raise AssertionError(f"foreground opacity {view.GetForegroundOpacity()} != {expected_opacity}")
        visible = sorted(name for name, legend in legends.items() if legend.GetVisibility())
        if visible != ([shown] if shown else []):
            raise AssertionError(f"legends visible for {visible} while showing {shown}")
    heatmaps.show_map_in_slice_views(scene, next(iter(imported.map_nodes.values())), volume, 0.35)
    heatmaps.set_map_opacity(scene, 0.8)
    if any(abs(view.GetForegroundOpacity() - 0.8) > 1e-9 for view in views):
        raise AssertionError("the opacity slider did not reach every slice view")
    heatmaps.set_map_threshold(scene, 0.6)
    for name, node in imported.map_nodes.items():
        display = node.GetScalarVolumeDisplayNode()
        if not display.GetApplyThreshold() or abs(display.GetLowerThreshold() - 0.6) > 1e-9:
            raise AssertionError(f"the 'hide below' slider did not reach map {name}")
        if (display.GetWindowLevelMin(), display.GetWindowLevelMax()) != (0.0, 1.0):
            raise AssertionError(f"changing the threshold moved the window of map {name}")


def scenario_show_3d(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """'Show 3D' makes the closed surfaces the 3D views draw; turning it off removes them."""
    volume, image, _ = _setup_input(scene, workdir)
    imported = import_result(scene, write_result_folder(workdir / "result", image), volume, show_3d=True)
    seg_node = imported.segmentation_node
    surface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    if not seg_node.GetSegmentation().ContainsRepresentation(surface):
        raise AssertionError("show_3d did not create the closed-surface representation")
    segment = seg_node.GetSegmentation().GetSegment(seg_node.GetSegmentation().GetNthSegmentID(0))
    polydata = segment.GetRepresentation(surface)
    if polydata is None or polydata.GetNumberOfPoints() == 0:
        raise AssertionError("the liver segment has an empty 3D surface")
    show_in_3d(seg_node, False)
    if seg_node.GetSegmentation().ContainsRepresentation(surface):
        raise AssertionError("turning 3D off left the surface")


def scenario_failed_import_leaves_scene_unchanged(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """A map off the input grid fails the import after other nodes were added; all of them go."""
    volume, image, _ = _setup_input(scene, workdir)
    folder = write_result_folder(workdir / "bad_result", image, bad_map=True)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    before, items_before = scene_node_ids(scene), sh.GetNumberOfItems()
    try:
        import_result(scene, folder, volume)
    except ValueError as exc:
        if "not on the input grid" not in str(exc):
            raise AssertionError(f"unexpected error: {exc}") from exc
    else:
        raise AssertionError("an off-grid map was imported")
    after = scene_node_ids(scene)
    if after != before:
        raise AssertionError(f"scene changed by a failed import: added {set(after) - set(before)}")
    if sh.GetNumberOfItems() != items_before:
        raise AssertionError("subject-hierarchy items were left behind")


def scenario_removed_result_leaves_scene_unchanged(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """Removing an imported result (the user cancels its display) restores the node list."""
    volume, image, _ = _setup_input(scene, workdir)
    folder = write_result_folder(workdir / "result", image)
    before = scene_node_ids(scene)
    imported = import_result(scene, folder, volume, show_3d=True)
    if len(scene_node_ids(scene)) <= len(before):
        raise AssertionError("import added no nodes")
    imported.remove(scene)
    if scene_node_ids(scene) != before:
        raise AssertionError("removing the result left nodes behind")


def scenario_overwrite_segmentation(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """A second run into the first run's segmentation node: same node (ID, name), new segments, the
    old run's maps replaced by the new ones; nothing else left behind."""
    volume, image, _ = _setup_input(scene, workdir)
    first = import_result(scene, write_result_folder(workdir / "first", image), volume)
    target = first.segmentation_node
    target.SetName("my segmentation")
    target.GetSegmentation().AddEmptySegment("extra", "user's extra segment")
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "another scan")
    target.SetNodeReferenceID(target.GetReferenceImageGeometryReferenceRole(), other.GetID())  # made on another scan
    before = set(scene_node_ids(scene))
    second = import_result(scene, write_result_folder(workdir / "second", image), volume, output_segmentation=target)
    if second.segmentation_node is not target or target.GetName() != "my segmentation":
        raise AssertionError("the chosen segmentation node was not the one overwritten")
    if target.GetNodeReferenceID(target.GetReferenceImageGeometryReferenceRole()) != volume.GetID():
        raise AssertionError("the overwritten segmentation does not refer to the input volume's geometry")
    names = [target.GetSegmentation().GetNthSegment(i).GetName() for i in range(target.GetSegmentation().GetNumberOfSegments())]
    if names != [label["name"] for label in LABELS]:
        raise AssertionError(f"overwritten segments are {names}")
    first_label = read_result(workdir / "second").labels[0]
    if not np.array_equal(_segment_array(target, target.GetSegmentation().GetNthSegmentID(0), volume),
                          label_array() == first_label.value):
        raise AssertionError("voxels of the overwritten segmentation differ from the new result")
    for node in first.map_nodes.values():
        if scene.GetNodeByID(node.GetID()) is not None:
            raise AssertionError(f"map {node.GetName()} of the overwritten run is still in the scene")
    for node in second.map_nodes.values():
        if node.GetNodeReferenceID(heatmaps.RESULT_REFERENCE_ROLE) != target.GetID():
            raise AssertionError(f"map {node.GetName()} does not point at the overwritten segmentation")
    added = [scene.GetNodeByID(i) for i in set(scene_node_ids(scene)) - before]
    if [n.GetID() for n in added if n.IsA("vtkMRMLSegmentationNode")]:
        raise AssertionError("an overwrite left a second segmentation node in the scene")
    if scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() != 1:
        raise AssertionError("an overwrite changed the number of segmentations")


def scenario_failed_overwrite_leaves_the_segmentation_unchanged(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """An import that fails part-way keeps the node it was to overwrite and that node's maps as they were."""
    volume, image, _ = _setup_input(scene, workdir)
    first = import_result(scene, write_result_folder(workdir / "first", image), volume)
    target = first.segmentation_node
    segment_ids = [target.GetSegmentation().GetNthSegmentID(i) for i in range(target.GetSegmentation().GetNumberOfSegments())]
    voxels = [_segment_array(target, segment_id, volume) for segment_id in segment_ids]
    before = scene_node_ids(scene)
    try:
        import_result(scene, write_result_folder(workdir / "bad", image, bad_map=True), volume, output_segmentation=target)
    except ValueError:
        pass
    else:
        raise AssertionError("an off-grid map was imported")
    if scene_node_ids(scene) != before:
        raise AssertionError("a failed overwrite changed the scene's nodes")
    after = [_segment_array(target, segment_id, volume) for segment_id in segment_ids]
    if not all(np.array_equal(a, b) for a, b in zip(voxels, after)):
        raise AssertionError("a failed overwrite changed the segmentation")


SCENARIOS: dict[str, Callable[["slicer.vtkMRMLScene", Path], None]] = {
    "geometry_of_loaded_volume": scenario_geometry_of_loaded_volume,
    "write_input_for_cli": scenario_write_input_for_cli,
    "import_result": scenario_import_result,
    "heat_map_switching": scenario_heat_map_switching,
    "show_3d": scenario_show_3d,
    "failed_import_leaves_scene_unchanged": scenario_failed_import_leaves_scene_unchanged,
    "removed_result_leaves_scene_unchanged": scenario_removed_result_leaves_scene_unchanged,
    "overwrite_segmentation": scenario_overwrite_segmentation,
    "failed_overwrite_leaves_the_segmentation_unchanged": scenario_failed_overwrite_leaves_the_segmentation_unchanged,
    **RUN_SCENARIOS,
}


def run_all(new_scene: Callable[[], "slicer.vtkMRMLScene"], workdir: str | os.PathLike[str]) -> list[str]:
    """Run every scenario on a fresh (or cleared) scene from ``new_scene``; returns their names."""
    for name, scenario in SCENARIOS.items():
        scenario(new_scene(), Path(workdir) / name)
    return list(SCENARIOS)
