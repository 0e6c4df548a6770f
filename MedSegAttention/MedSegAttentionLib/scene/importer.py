"""A whole result folder into the scene, all or nothing."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import slicer

from . import heatmaps, hierarchy, segmentation
from .result import ResultDescription, read_result
from .transaction import SceneTransaction

IMPORTED_AT_ATTRIBUTE = "MedSegAttention.ImportedAt"  # seconds since the epoch of the result's import


@dataclass
class ImportedResult:
    """The nodes one run added: the segmentation, the maps by name, and what to tell the user."""

    description: ResultDescription
    segmentation_node: "slicer.vtkMRMLSegmentationNode"
    map_nodes: dict[str, "slicer.vtkMRMLScalarVolumeNode"] = field(default_factory=dict)
    node_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def map_titles(self) -> dict[str, str]:
        """Map name -> legend title, in the card's order."""
        return {info.name: info.title for info in self.description.maps}

    def remove(self, scene: "slicer.vtkMRMLScene") -> None:
        """Take every node of this result out of the scene again."""
        for node_id in reversed(self.node_ids):
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)


def import_result(
    scene: "slicer.vtkMRMLScene",
    folder: str | os.PathLike[str],
    input_volume: "slicer.vtkMRMLScalarVolumeNode",
    show_3d: bool = False,
    map_threshold: float = heatmaps.DEFAULT_THRESHOLD,
    output_segmentation: "slicer.vtkMRMLSegmentationNode | None" = None,
) -> ImportedResult:
    """Read ``folder`` (docs/result-format.md) into the scene next to ``input_volume``.

    ``output_segmentation``: a segmentation node to overwrite (its segments replaced, its name, ID and
    place kept; the evidence maps of the run it held are removed) instead of a new node.
    If anything fails, every node added so far is removed and the exception propagates, so the scene
    (an overwritten node included) is exactly as before.
    """
    description = read_result(folder)
    base = input_volume.GetName() or "volume"
    with SceneTransaction(scene) as transaction:
        seg_node, warnings = segmentation.import_segmentation(
            scene, description, input_volume, f"{base} {description.model_title}"
        )
        map_nodes = {
            info.name: heatmaps.import_map(scene, info, input_volume, f"{base} {info.title}", map_threshold)
            for info in description.maps
        }
        transform_id = input_volume.GetTransformNodeID()
        outputs = [seg_node, *map_nodes.values()]
        for node in outputs:
            node.SetAndObserveTransformNodeID(transform_id)
        hierarchy.place_next_to(scene, input_volume, outputs)
        if show_3d:
            segmentation.show_in_3d(seg_node, True)
        if output_segmentation is not None:  # the last step, once all the rest has worked
            _overwrite(scene, output_segmentation, seg_node, input_volume)
            seg_node = output_segmentation
            seg_node.SetAndObserveTransformNodeID(transform_id)
        seg_node.SetAttribute("MedSegAttention.Model", description.model_id)
        seg_node.SetAttribute(IMPORTED_AT_ATTRIBUTE, f"{time.time():.6f}")  # newest first, overwrites included
        for node in map_nodes.values():  # so the result can be found again after a scene reload
            node.SetNodeReferenceID(heatmaps.RESULT_REFERENCE_ROLE, seg_node.GetID())
    return ImportedResult(
        description=description,
        segmentation_node=seg_node,
        map_nodes=map_nodes,
        node_ids=[i for i in transaction.added_node_ids if scene.GetNodeByID(i) is not None],
        warnings=[*description.warnings, *warnings],
    )


def _overwrite(scene: "slicer.vtkMRMLScene", target: "slicer.vtkMRMLSegmentationNode",
               source: "slicer.vtkMRMLSegmentationNode", input_volume: "slicer.vtkMRMLScalarVolumeNode") -> None:
    """Give ``target`` the segments of the freshly imported ``source`` (then removed) and the input
    volume as reference geometry, and remove the evidence maps of the result ``target`` held before."""
    for old_map in heatmaps.map_nodes_in(scene):
        if old_map.GetNodeReferenceID(heatmaps.RESULT_REFERENCE_ROLE) == target.GetID():
            scene.RemoveNode(old_map)
    target.GetSegmentation().DeepCopy(source.GetSegmentation())
    target.SetReferenceImageGeometryParameterFromVolumeNode(input_volume)
    if target.GetDisplayNode() is None:
        target.CreateDefaultDisplayNodes()
    scene.RemoveNode(source)


@dataclass
class SceneResult:
    """A result found in the scene (e.g. after reloading a saved scene): its segmentation, its maps by name
    and their legend titles; the same fields the panel uses of an :class:`ImportedResult`."""

    segmentation_node: "slicer.vtkMRMLSegmentationNode"
    map_nodes: dict[str, "slicer.vtkMRMLScalarVolumeNode"]
    map_titles: dict[str, str]


def results_in_scene(scene: "slicer.vtkMRMLScene") -> list[SceneResult]:
    """Every MedSegAttention segmentation in the scene with the evidence maps of its run, oldest import
    first (a segmentation overwritten by a later run counts as that run's)."""
    segmentations = scene.GetNodesByClass("vtkMRMLSegmentationNode")
    all_maps = heatmaps.map_nodes_in(scene)
    results = []
    for index in range(segmentations.GetNumberOfItems()):
        seg_node = segmentations.GetItemAsObject(index)
        if seg_node.GetAttribute("MedSegAttention.Model") is None:
            continue
        maps = [m for m in all_maps if m.GetNodeReferenceID(heatmaps.RESULT_REFERENCE_ROLE) == seg_node.GetID()]
        results.append(SceneResult(
            segmentation_node=seg_node,
            map_nodes={m.GetAttribute(heatmaps.MAP_NAME_ATTRIBUTE): m for m in maps},
            map_titles={m.GetAttribute(heatmaps.MAP_NAME_ATTRIBUTE):
                        m.GetAttribute(heatmaps.MAP_TITLE_ATTRIBUTE) or m.GetAttribute(heatmaps.MAP_NAME_ATTRIBUTE)
                        for m in maps},
        ))
    return sorted(results, key=lambda r: float(r.segmentation_node.GetAttribute(IMPORTED_AT_ATTRIBUTE) or 0.0))
