"""NRRD files <-> MRML volume nodes with exact geometry.

Files (NRRD, NIfTI, ...) store geometry in LPS; MRML stores IJK-to-RAS. Slicer's own archetype
storage node does the LPS<->RAS flip on read and write, so reading and writing go through it and
never through hand-made matrices. The storage nodes used here are never added to the scene: the
nodes we create carry no file reference into a temporary folder that will be deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import slicer
import vtk

GEOMETRY_TOLERANCE = 1e-4  # mm, on the IJK-to-RAS entries


class GeometryError(ValueError):
    """A result volume is not on the input grid."""


def ijk_to_ras_array(volume_node: "slicer.vtkMRMLVolumeNode") -> np.ndarray:
    """The node's IJK-to-RAS matrix as a 4x4 numpy array."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def dimensions(volume_node: "slicer.vtkMRMLVolumeNode") -> tuple[int, int, int]:
    image = volume_node.GetImageData()
    return tuple(image.GetDimensions()) if image is not None else (0, 0, 0)  # type: ignore[return-value]


def read_volume_data(volume_node: "slicer.vtkMRMLVolumeNode", path: str | os.PathLike[str]) -> None:
    """Read image data and geometry from ``path`` into an existing node (in a scene or not)."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(volume_node):
        raise OSError(f"cannot read image {path}")


def load_volume(
    scene: "slicer.vtkMRMLScene",
    path: str | os.PathLike[str],
    name: str | None = None,
    labelmap: bool = False,
) -> "slicer.vtkMRMLVolumeNode":
    """Add a scalar (or label map) volume read from ``path`` to the scene, with a display node."""
    node_class = slicer.vtkMRMLLabelMapVolumeNode if labelmap else slicer.vtkMRMLScalarVolumeNode
    node = node_class()
    node.SetName(scene.GenerateUniqueName(name or Path(path).name.split(".")[0]))
    read_volume_data(node, path)
    scene.AddNode(node)
    display_class = slicer.vtkMRMLLabelMapVolumeDisplayNode if labelmap else slicer.vtkMRMLScalarVolumeDisplayNode
    display = display_class()
    scene.AddNode(display)
    display.SetDefaultColorMap()  # Grey (Labels for label maps), as Slicer's volumes logic does
    if not labelmap:
        display.AutoWindowLevelOn()
    node.SetAndObserveDisplayNodeID(display.GetID())
    return node


def write_volume(volume_node: "slicer.vtkMRMLVolumeNode", path: str | os.PathLike[str], compress: bool = False) -> Path:
    """Write the node's voxels and IJK-to-RAS geometry to a NRRD file (LPS on disk), for the CLI.

    Parent transforms are not applied (the result comes back on the node's own grid and is put under
    the same transform). Uncompressed by default: faster, and the file is temporary.
    """
    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError("the input volume has no image data")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(bool(compress))
    if not storage.WriteData(volume_node):
        raise OSError(f"cannot write {path}")
    return path


def check_same_grid(node: "slicer.vtkMRMLVolumeNode", reference: "slicer.vtkMRMLVolumeNode", what: str) -> None:
    """Raise :class:`GeometryError` unless ``node`` has the reference's size and IJK-to-RAS."""
    if dimensions(node) != dimensions(reference):
        raise GeometryError(
            f"{what} has size {dimensions(node)} but the input volume has {dimensions(reference)}; "
            "results must be on the input grid"
        )
    difference = np.abs(ijk_to_ras_array(node) - ijk_to_ras_array(reference)).max()
    if difference > GEOMETRY_TOLERANCE:
        raise GeometryError(
            f"{what} is not on the input grid (IJK-to-RAS differs by {difference:.3g}); "
            "refusing to show it in the wrong place"
        )
