"""The Results section: the evidence-map choice and the segmentation's buttons (3D, Segment Editor).

Binds ``mapComboBox``, ``segmentationShow3DButton`` and ``editSegmentationButton`` to the result the
panel shows: the run just finished, or after a scene reload the newest result found in the scene
(:meth:`PanelLogic.latestResult`). The work is in the Qt-free logic; this class only wires widgets.
"""

import slicer
from slicer.i18n import tr as _


class ResultsSection:
    """``parameters()`` returns the module's parameter node (or None)."""

    def __init__(self, ui, logic, parameters) -> None:
        self.ui, self.logic, self._parameters = ui, logic, parameters
        self.result = None
        ui.mapComboBox.connect("currentIndexChanged(int)", self.onMapChanged)
        ui.editSegmentationButton.connect("clicked()", self.onEditSegmentation)

    def show(self, result) -> None:
        """Offer ``result``'s maps (none shown: the views change only when the user picks one) and buttons."""
        self.result = result
        self.ui.segmentationShow3DButton.setSegmentationNode(result.segmentation_node)
        self.ui.segmentationShow3DButton.enabled = self.ui.editSegmentationButton.enabled = True
        wasBlocked = self.ui.mapComboBox.blockSignals(True)
        self.ui.mapComboBox.clear()
        self.ui.mapComboBox.addItem(_("None"), "")
        for name, title in result.map_titles.items():
            self.ui.mapComboBox.addItem(title, name)
        self.ui.mapComboBox.blockSignals(wasBlocked)
        self.ui.mapComboBox.currentIndex = 0

    def restore(self) -> None:
        """No heat map in the input selectors; the newest result of the scene when none (or a removed one) is shown."""
        for selector in (self.ui.inputVolumeSelector, self.ui.batchVolumesSelector):
            selector.sortFilterProxyModel().hiddenNodeIDs = self.logic.evidenceMapNodeIDs()
        if self.result is None or self.result.segmentation_node.GetScene() is None:
            self.result = None
            latest = self.logic.latestResult()
            if latest is not None:
                self.show(latest)

    def clear(self) -> None:
        self.result = None
        self.ui.segmentationShow3DButton.enabled = self.ui.editSegmentationButton.enabled = False

    def onMapChanged(self, index: int) -> None:
        parameters = self._parameters()
        if self.result is None or not parameters:
            return
        name = self.ui.mapComboBox.itemData(index) or ""
        parameters.selectedMap = name
        self.logic.showMap(self.result, name, parameters.mapOpacity)

    def onEditSegmentation(self) -> None:
        """Open the Segment Editor on the result's segmentation, its input volume as the source."""
        if self.result is None:
            return
        source = self.logic.inputVolumeOf(self.result)
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(self.result.segmentation_node)
        if source is not None:
            editor.setSourceVolumeNode(source)
