"""Evidence maps as scalar volumes shown as heat maps: Inferno colours over the map's value range
(0-1 for most maps), low values clear.

Each map gets a colour legend (hidden until the map is shown); :func:`show_map_in_slice_views`
switches the foreground layer and the visible legend map by map.
"""

from __future__ import annotations

import slicer

from .result import MapInfo
from .volumes import check_same_grid, read_volume_data

SLICER_INFERNO_ID = "vtkMRMLColorTableNodeFileInferno.txt"  # Slicer's built-in table (full application)
OWN_INFERNO_ATTRIBUTE = "MedSegAttention.ColorMap"
OWN_INFERNO_NAME = "MedSegAttention Inferno"
MAP_NAME_ATTRIBUTE = "MedSegAttention.MapName"
MAP_TITLE_ATTRIBUTE = "MedSegAttention.MapTitle"  # the legend text: what the values mean
MAP_RANGE_ATTRIBUTE = "MedSegAttention.MapRange"  # "low high": the range the colours span (result.json's range)
MAP_UNIT_ATTRIBUTE = "MedSegAttention.MapUnit"  # "percent" for a [0, 1] map stored as whole percent (result.json's unit)
RESULT_REFERENCE_ROLE = "MedSegAttention.resultSegmentation"  # map -> the segmentation of its run (saved with the scene)
LEGEND_CLASS = "vtkMRMLColorLegendDisplayNode"
DEFAULT_THRESHOLD = 0.05
# matplotlib's Inferno sampled at 17 evenly spaced points; interpolated linearly to 256 entries.
INFERNO_CONTROL_POINTS = (
    (0.0015, 0.0005, 0.0139), (0.0423, 0.0281, 0.1411), (0.1293, 0.0473, 0.2908), (0.2383, 0.0366, 0.3964),
    (0.3415, 0.0623, 0.4294), (0.4412, 0.0993, 0.4316), (0.5409, 0.1347, 0.4151), (0.6401, 0.1714, 0.3811),
    (0.7357, 0.2159, 0.3302), (0.8224, 0.2752, 0.2661), (0.8943, 0.3534, 0.1936), (0.947, 0.4492, 0.1153),
    (0.9784, 0.5579, 0.0349), (0.9879, 0.6753, 0.0653), (0.9746, 0.7977, 0.2063), (0.9476, 0.9174, 0.4107),
    (0.9884, 0.9984, 0.6449),
)


def inferno_rgb(fraction: float) -> tuple[float, float, float]:
    """Inferno colour at ``fraction`` in [0, 1] (linear interpolation between the control points)."""
    fraction = min(1.0, max(0.0, fraction))
    position = fraction * (len(INFERNO_CONTROL_POINTS) - 1)
    low = min(int(position), len(INFERNO_CONTROL_POINTS) - 2)
    t = position - low
    a, b = INFERNO_CONTROL_POINTS[low], INFERNO_CONTROL_POINTS[low + 1]
    return tuple(a[i] + (b[i] - a[i]) * t for i in range(3))  # type: ignore[return-value]


def inferno_color_node(scene: "slicer.vtkMRMLScene") -> "slicer.vtkMRMLColorNode":
    """Slicer's built-in Inferno table when the scene has it, else our own (created once per scene)."""
    builtin = scene.GetNodeByID(SLICER_INFERNO_ID)
    if builtin is not None:
        return builtin
    tables = scene.GetNodesByClass("vtkMRMLColorTableNode")
    for i in range(tables.GetNumberOfItems()):
        node = tables.GetItemAsObject(i)
        if node.GetAttribute(OWN_INFERNO_ATTRIBUTE) == "Inferno":
            return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetTypeToUser()
    node.SetName(OWN_INFERNO_NAME)
    node.SetAttribute(OWN_INFERNO_ATTRIBUTE, "Inferno")
    node.SetNumberOfColors(256)
    node.GetLookupTable().SetTableRange(0, 255)
    for index in range(256):
        node.SetColor(index, *inferno_rgb(index / 255.0), 1.0)
    node.SetHideFromEditors(False)
    scene.AddNode(node)
    return node


def configure_heatmap_display(
    display: "slicer.vtkMRMLScalarVolumeDisplayNode", color_node_id: str, threshold: float = DEFAULT_THRESHOLD,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> None:
    """Inferno over ``value_range`` (a fixed window), values below ``threshold`` (a fraction of the
    range) transparent in the foreground layer."""
    display.SetAndObserveColorNodeID(color_node_id)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(*value_range)
    display.AutoThresholdOff()
    display.SetThreshold(threshold_value(value_range, threshold), 1.0e6)
    display.ApplyThresholdOn()
    display.SetInterpolate(1)


def threshold_value(value_range: tuple[float, float], fraction: float) -> float:
    """The map value at ``fraction`` of its range (the module's threshold is a fraction, so one slider
    serves 0-1 maps and raw ones)."""
    return value_range[0] + fraction * (value_range[1] - value_range[0])


def record_value_range(node: "slicer.vtkMRMLNode", value_range: tuple[float, float]) -> None:
    """Record on a map node the range its colours span (read back by :func:`recorded_value_range`)."""
    node.SetAttribute(MAP_RANGE_ATTRIBUTE, f"{value_range[0]!r} {value_range[1]!r}")


def recorded_value_range(node: "slicer.vtkMRMLScalarVolumeNode") -> tuple[float, float]:
    """The range recorded on a map node at import ([0, 1] for a node without one)."""
    text = node.GetAttribute(MAP_RANGE_ATTRIBUTE)
    if not text:
        return 0.0, 1.0
    low, high = (float(v) for v in text.split())
    return low, high


def import_map(
    scene: "slicer.vtkMRMLScene",
    map_info: MapInfo,
    input_volume: "slicer.vtkMRMLScalarVolumeNode",
    name: str,
    threshold: float = DEFAULT_THRESHOLD,
) -> "slicer.vtkMRMLScalarVolumeNode":
    """Add one evidence map as a heat-map volume on the input grid."""
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(scene.GenerateUniqueName(name))
    read_volume_data(node, map_info.path)
    check_same_grid(node, input_volume, f"map {map_info.name!r}")
    node.SetAttribute(MAP_NAME_ATTRIBUTE, map_info.name)
    node.SetAttribute(MAP_TITLE_ATTRIBUTE, map_info.title)
    node.SetAttribute("MedSegAttention.MapKind", map_info.kind)
    record_value_range(node, map_info.value_range)
    scene.AddNode(node)
    show_as_heatmap(scene, node, map_info.title, map_info.value_range, threshold, map_info.unit)
    return node


def show_as_heatmap(
    scene: "slicer.vtkMRMLScene", node: "slicer.vtkMRMLScalarVolumeNode", title: str,
    value_range: tuple[float, float] = (0.0, 1.0), threshold: float = DEFAULT_THRESHOLD, unit: str | None = None,
) -> None:
    """Give a map volume in the scene its heat-map display (its own display node reconfigured, or a
    new one) and its hidden colour legend; ``unit`` ("percent" or None) is recorded on the node."""
    if unit:
        node.SetAttribute(MAP_UNIT_ATTRIBUTE, unit)
    display = node.GetScalarVolumeDisplayNode()
    if display is None:
        display = slicer.vtkMRMLScalarVolumeDisplayNode()
        scene.AddNode(display)
        node.SetAndObserveDisplayNodeID(display.GetID())
    configure_heatmap_display(display, inferno_color_node(scene).GetID(), threshold, value_range)
    if slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node) is None:
        add_color_legend(scene, node, title, value_range, unit)


def legend_text(title: str, value_range: tuple[float, float], unit: str | None = None) -> tuple[str, str]:
    """The legend's title and label format: one decimal for 0-1 maps, whole percent with the sign for
    maps stored as percent (the title says so), three significant digits for raw ranges."""
    if unit == "percent":
        return f"{title} (in %: 100 % = 1)", "%.0f %%"
    return title, "%.1f" if tuple(value_range) == (0.0, 1.0) else "%.3g"


def add_color_legend(
    scene: "slicer.vtkMRMLScene", map_node: "slicer.vtkMRMLScalarVolumeNode", title: str,
    value_range: tuple[float, float] = (0.0, 1.0), unit: str | None = None,
) -> "slicer.vtkMRMLColorLegendDisplayNode":
    """A colour legend (Inferno over the map's window) for the map, hidden until the map is shown,
    titled and labelled by :func:`legend_text`."""
    if not scene.IsNodeClassRegistered(LEGEND_CLASS):  # the Colors module registers it inside Slicer
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(map_node)
    if legend is None:
        raise RuntimeError(f"Slicer could not add a colour legend to {map_node.GetName()}")
    title_text, label_format = legend_text(title, value_range, unit)
    legend.SetTitleText(title_text)
    legend.SetLabelFormat(label_format)
    legend.SetVisibility(False)
    return legend


def map_nodes_in(scene: "slicer.vtkMRMLScene") -> list["slicer.vtkMRMLScalarVolumeNode"]:
    """Every evidence-map volume in the scene (from any run)."""
    volumes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    nodes = [volumes.GetItemAsObject(i) for i in range(volumes.GetNumberOfItems())]
    return [node for node in nodes if node.GetAttribute(MAP_NAME_ATTRIBUTE) is not None]


def _composite_nodes(scene: "slicer.vtkMRMLScene") -> list["slicer.vtkMRMLSliceCompositeNode"]:
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


#: composite-node attributes holding what the foreground layer showed before the first map was put there
SAVED_FOREGROUND = "MedSegAttention.SavedForegroundVolumeID"
SAVED_OPACITY = "MedSegAttention.SavedForegroundOpacity"


def _shows_a_map(scene: "slicer.vtkMRMLScene", composite: "slicer.vtkMRMLSliceCompositeNode") -> bool:
    node = scene.GetNodeByID(composite.GetForegroundVolumeID()) if composite.GetForegroundVolumeID() else None
    return node is not None and node.GetAttribute(MAP_NAME_ATTRIBUTE) is not None


def show_map_in_slice_views(
    scene: "slicer.vtkMRMLScene",
    map_node: "slicer.vtkMRMLScalarVolumeNode | None",
    background: "slicer.vtkMRMLScalarVolumeNode | None",
    opacity: float,
) -> None:
    """Put the map in the foreground layer of every slice view (or take it out); only its legend shows.

    Only the foreground layer changes, and only when the user picks a map: the background stays what
    the user had (the input is set only in a view that shows nothing), so a PET/CT fusion or another
    series survives. What the foreground showed before the first map (volume and opacity) is saved on
    the view and restored when the map is hidden (``map_node`` None).
    """
    for composite in _composite_nodes(scene):
        if map_node is not None:
            if not _shows_a_map(scene, composite) and composite.GetAttribute(SAVED_OPACITY) is None:
                composite.SetAttribute(SAVED_FOREGROUND, composite.GetForegroundVolumeID() or "")
                composite.SetAttribute(SAVED_OPACITY, repr(composite.GetForegroundOpacity()))
            if background is not None and not composite.GetBackgroundVolumeID():
                composite.SetBackgroundVolumeID(background.GetID())
            composite.SetForegroundVolumeID(map_node.GetID())
            composite.SetForegroundOpacity(opacity)
        elif composite.GetAttribute(SAVED_OPACITY) is not None:
            composite.SetForegroundVolumeID(composite.GetAttribute(SAVED_FOREGROUND) or None)
            composite.SetForegroundOpacity(float(composite.GetAttribute(SAVED_OPACITY)))
            composite.RemoveAttribute(SAVED_FOREGROUND)
            composite.RemoveAttribute(SAVED_OPACITY)
        elif _shows_a_map(scene, composite):
            composite.SetForegroundVolumeID(None)
    for node in map_nodes_in(scene):
        legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node)
        if legend is not None:
            legend.SetVisibility(map_node is not None and node.GetID() == map_node.GetID())


def set_map_threshold(scene: "slicer.vtkMRMLScene", threshold: float) -> None:
    """Hide values below ``threshold``, a fraction of each map's range (transparent in the foreground
    layer), on every evidence map."""
    for node in map_nodes_in(scene):
        display = node.GetScalarVolumeDisplayNode()
        if display is not None:
            display.SetThreshold(threshold_value(recorded_value_range(node), threshold), 1.0e6)


def set_map_opacity(scene: "slicer.vtkMRMLScene", opacity: float) -> None:
    """Foreground opacity of the slice views that show an evidence map (the others are the user's)."""
    for composite in _composite_nodes(scene):
        if _shows_a_map(scene, composite):
            composite.SetForegroundOpacity(opacity)
