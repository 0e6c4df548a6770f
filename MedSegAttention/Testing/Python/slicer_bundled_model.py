"""The bundled left-atrium model end to end in a scene: the panel's logic starts the real ``medseg``
child process, the result is imported, and the segment, its codes, its geometry and the evidence maps
are checked. The module's self-test runs it inside Slicer on a real MR volume (Slicer's sample data;
not a left atrium, so only the mechanics are checked); CI runs it against slicer-core on a real LGE-MR
case with its ground truth, so accuracy is checked too. Needs numpy, which Slicer ships.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from MedSegAttentionLib.scene import heatmaps
from MedSegAttentionLib.scene.volumes import dimensions, ijk_to_ras_array
from MedSegAttentionLib.slicer_support.panel_logic import DictSettings, PanelLogic

BUNDLED_MODEL = "sipnet-left-atrium-mr"
LEFT_ATRIUM_CODE = "82471001"  # SNOMED CT, as the card says


def segment_labelmap(segmentation_node: "slicer.vtkMRMLSegmentationNode",
                     reference: "slicer.vtkMRMLScalarVolumeNode") -> np.ndarray:
    """Every segment as a (K, J, I) label array on the reference volume's grid."""
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    segmentation_node.GetScene().AddNode(labelmap)
    try:
        ids = vtk.vtkStringArray()
        segmentation_node.GetSegmentation().GetSegmentIDs(ids)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, reference):
            raise AssertionError("the segmentation could not be exported as a label map")
        if dimensions(labelmap) != dimensions(reference) or not np.allclose(
                ijk_to_ras_array(labelmap), ijk_to_ras_array(reference), atol=1e-4):
            raise AssertionError("the segmentation is not on the input grid")
        scalars = labelmap.GetImageData().GetPointData().GetScalars()
        return numpy_support.vtk_to_numpy(scalars).reshape(tuple(reversed(dimensions(reference)))).copy()
    finally:
        segmentation_node.GetScene().RemoveNode(labelmap)


def run_bundled_model(scene: "slicer.vtkMRMLScene", volume: "slicer.vtkMRMLScalarVolumeNode",
                      workdir: str | os.PathLike[str], truth: np.ndarray | None = None,
                      min_dice: float = 0.85) -> float | None:
    """Segment ``volume`` with the bundled SIP-Net through the real CLI and check the scene; with ``truth``
    (a (K, J, I) array on the volume's grid) return the Dice, failing below ``min_dice``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    logic = PanelLogic(DictSettings({"MedSegAttention/ModelFolder": str(workdir / "models")}), scene, workdir)
    result = logic.process(volume, BUNDLED_MODEL, device="cpu", tta=False)
    segmentation = result.segmentation_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() != 1:
        raise AssertionError(f"expected the one left-atrium segment, got {segmentation.GetNumberOfSegments()}")
    segment, tag = segmentation.GetNthSegment(0), vtk.reference("")
    segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
    if segment.GetName().lower() != "left atrium" or LEFT_ATRIUM_CODE not in str(tag):
        raise AssertionError(f"segment {segment.GetName()!r} lacks its name or SNOMED CT code")
    if logic.inputVolumeOf(result) is not volume:
        raise AssertionError("the segmentation does not refer to its input volume")
    if sorted(result.map_nodes) != ["attention_3"]:
        raise AssertionError(f"maps {sorted(result.map_nodes)} instead of the card's attention_3")
    for node in result.map_nodes.values():
        if dimensions(node) != dimensions(volume) or not node.GetAttribute(heatmaps.MAP_TITLE_ATTRIBUTE):
            raise AssertionError(f"map {node.GetName()} is not on the input grid or has no legend title")
    if truth is None:
        return None
    predicted, expected = segment_labelmap(result.segmentation_node, volume) > 0, truth > 0
    dice = 2.0 * float((predicted & expected).sum()) / float(predicted.sum() + expected.sum())
    if dice < min_dice:
        raise AssertionError(f"Dice {dice:.3f} against the ground truth, under {min_dice}")
    return dice
