"""Placing result nodes next to their input in the subject hierarchy (same study / parent folder)."""

from __future__ import annotations

import slicer


def _hierarchy(scene: "slicer.vtkMRMLScene") -> "slicer.vtkMRMLSubjectHierarchyNode | None":
    """The scene's subject-hierarchy node if one exists; never creates one."""
    nodes = scene.GetNodesByClass("vtkMRMLSubjectHierarchyNode")
    return nodes.GetItemAsObject(0) if nodes.GetNumberOfItems() else None


def place_next_to(scene: "slicer.vtkMRMLScene", input_node: "slicer.vtkMRMLNode", nodes: list) -> bool:
    """Give each node the input's parent item (its study in a DICOM-loaded scene).

    Returns False (and does nothing) when the scene has no subject hierarchy or the input has no
    item in it; placement is a convenience, never a reason to fail.
    """
    hierarchy = _hierarchy(scene)
    if hierarchy is None:
        return False
    input_item = hierarchy.GetItemByDataNode(input_node)
    if not input_item:
        return False
    parent = hierarchy.GetItemParent(input_item)
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:
            hierarchy.CreateItem(parent, node)
    return True


def item_parent_of(scene: "slicer.vtkMRMLScene", node: "slicer.vtkMRMLNode") -> int:
    """Parent item ID of the node's subject-hierarchy item (0 when absent)."""
    hierarchy = _hierarchy(scene)
    if hierarchy is None:
        return 0
    item = hierarchy.GetItemByDataNode(node)
    return hierarchy.GetItemParent(item) if item else 0
