"""The label map of a result as a segmentation node: one named, coloured, coded segment per label."""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .result import LabelInfo, ResultDescription
from .volumes import check_same_grid, read_volume_data

# Terminology context used by Slicer's terminology selector for anatomy (Slicer's default list).
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
FALLBACK_COLORS = ((0.9, 0.3, 0.3), (0.3, 0.7, 0.3), (0.3, 0.5, 0.9), (0.9, 0.8, 0.2), (0.7, 0.4, 0.8))


def ensure_converter_rules() -> None:
    """Register Slicer's segmentation conversion rules when nobody has (slicer-core outside Slicer).

    The Segmentations module registers them at application start-up; a bare MRML library has none,
    and then a segment cannot even hold an empty binary label map.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if factory.GetConverterRules():
        return
    for rule_class in (
        slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
        slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
        slicer.vtkClosedSurfaceToFractionalLabelmapConversionRule,
        slicer.vtkFractionalLabelmapToClosedSurfaceConversionRule,
    ):
        factory.RegisterConverterRule(rule_class())


def terminology_entry_string(label: LabelInfo) -> str:
    """The label's codes in Slicer's serialized terminology-entry format ('' when it has none).

    Built with Slicer's own serializer (``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry``),
    so the string is exactly what the Segment Editor and DICOM SEG export read.
    """
    if "category" not in label.terminology or "type" not in label.terminology:
        return ""
    entry = slicer.vtkSlicerTerminologyEntry()
    entry.SetTerminologyContextName(TERMINOLOGY_CONTEXT)
    targets = {
        "category": entry.GetCategoryObject(),
        "type": entry.GetTypeObject(),
        "typeModifier": entry.GetTypeModifierObject(),
        "anatomicRegion": entry.GetRegionObject(),
        "anatomicRegionModifier": entry.GetRegionModifierObject(),
    }
    if "anatomicRegion" in label.terminology:
        entry.SetRegionContextName(ANATOMIC_CONTEXT)
    for key, target in targets.items():
        concept = label.terminology.get(key)
        if concept is not None:
            target.SetCodingSchemeDesignator(concept.scheme)
            target.SetCodeValue(concept.code)
            target.SetCodeMeaning(concept.meaning)
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(entry)


def _contiguous_labelmap(labelmap: "slicer.vtkMRMLLabelMapVolumeNode", labels: tuple[LabelInfo, ...]) -> list[int]:
    """Renumber label values in place to 1..N in ``labels`` order; returns values found but not described."""
    scalars = labelmap.GetImageData().GetPointData().GetScalars()
    values = numpy_support.vtk_to_numpy(scalars)
    remapped = np.zeros(values.shape, dtype=np.uint16)
    for index, label in enumerate(labels, start=1):
        remapped[values == label.value] = index
    unknown = sorted(int(v) for v in np.unique(values) if v != 0 and v not in {label.value for label in labels})
    new_scalars = numpy_support.numpy_to_vtk(remapped, deep=True, array_type=vtk.VTK_UNSIGNED_SHORT)
    new_scalars.SetName(scalars.GetName() or "ImageScalars")
    labelmap.GetImageData().GetPointData().SetScalars(new_scalars)
    labelmap.GetImageData().Modified()
    return unknown


def import_segmentation(
    scene: "slicer.vtkMRMLScene",
    result: ResultDescription,
    input_volume: "slicer.vtkMRMLScalarVolumeNode",
    name: str,
) -> tuple["slicer.vtkMRMLSegmentationNode", list[str]]:
    """Add the result's segmentation to the scene; returns the node and warnings.

    Every label listed in result.json gets a segment (an empty one if the network found nothing),
    with the listed name, colour and terminology tag; the reference geometry is the input volume.
    """
    ensure_converter_rules()
    warnings: list[str] = []
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()  # temporary, never added to the scene
    read_volume_data(labelmap, result.segmentation_path)
    check_same_grid(labelmap, input_volume, "the segmentation")
    unknown = _contiguous_labelmap(labelmap, result.labels)
    if unknown:
        warnings.append(f"label values {unknown} are not described in result.json and were left out")

    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(scene.GenerateUniqueName(name))
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(input_volume)
    segmentation = node.GetSegmentation()
    segment_ids = vtk.vtkStringArray()
    for index, label in enumerate(result.labels):
        color = label.color or FALLBACK_COLORS[index % len(FALLBACK_COLORS)]
        segment_id = segmentation.AddEmptySegment(segmentation.GenerateUniqueSegmentID(label.name), label.name, color)
        segment_ids.InsertNextValue(segment_id)
    if result.labels and not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        labelmap, node, segment_ids
    ):
        raise RuntimeError(f"Slicer could not import the label map {result.segmentation_path}")
    for index, label in enumerate(result.labels):
        segment = segmentation.GetSegment(segment_ids.GetValue(index))
        segment.SetName(label.name)  # the import may rename from the label map's colour table
        segment.SetColor(*(label.color or FALLBACK_COLORS[index % len(FALLBACK_COLORS)]))
        tag = terminology_entry_string(label)
        if tag:
            segment.SetTag(segment.GetTerminologyEntryTagName(), tag)
        segment.SetTag("MedSegAttention.LabelValue", str(label.value))
    return node, warnings


def show_in_3d(segmentation_node: "slicer.vtkMRMLSegmentationNode", show: bool) -> None:
    """Create (or drop) the closed-surface representation that the 3D views draw."""
    if show:
        segmentation_node.CreateClosedSurfaceRepresentation()
    else:
        segmentation_node.RemoveClosedSurfaceRepresentation()
