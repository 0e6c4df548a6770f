"""The panel's model menu and its 'Models' section: list the catalog, install weights, the model folder.

Binds widgets of ``Resources/UI/MedSegAttention.ui`` to the Qt-free logic: the list comes from
``medseg models --json`` in a child process (:meth:`PanelLogic.startModelList`), each entry is offered
as :func:`~MedSegAttentionLib.slicer_support.child_reports.model_choice` says (greyed with a reason when it
cannot run), installs are ``medseg install-weights`` child processes.
"""

import os

import qt
import slicer
from slicer.i18n import tr as _

from MedSegAttentionLib.slicer_support import child_reports
from MedSegAttentionLib.slicer_support.process_runner import ExitStatus


class ModelsSection:
    """Owns the model list; calls ``onListed(index)`` when it changed. ``wantedModelId()``: the model to
    select again after a refresh (the parameter node's)."""

    def __init__(self, ui, logic, parent, startHelper, ensureDependencies, onListed, wantedModelId) -> None:
        self.ui, self.logic, self.parent = ui, logic, parent
        self._startHelper, self._ensureDependencies, self._onListed = startHelper, ensureDependencies, onListed
        self._wantedModelId = wantedModelId
        self.models = []
        ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        ui.installFromFileButton.connect("clicked(bool)", self.onInstallFromFile)
        ui.installFromUrlButton.connect("clicked(bool)", self.onInstallFromUrl)
        ui.openModelFolderButton.connect("clicked(bool)", self.onOpenModelFolder)
        ui.modelFolderPathLineEdit.currentPath = logic.modelFolderSetting()
        ui.modelFolderPathLineEdit.connect("currentPathChanged(QString)", logic.setModelFolderSetting)

    def selected(self):
        index = self.ui.modelComboBox.currentIndex
        return self.models[index] if 0 <= index < len(self.models) else None

    def onRefreshModels(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to list the models."), waitCursor=True):
            if not self._ensureDependencies():
                return
            self.ui.modelInfoLabel.text = _("Reading the model catalog...")
            self._startHelper(self.logic.startModelList(), self._onModelsListed)

    def _onModelsListed(self, runner) -> None:
        if runner.status is not ExitStatus.SUCCESS:
            self.ui.modelInfoLabel.text = _("Could not list the models: ") + runner.error_message
            return
        self.models = child_reports.parse_model_list(runner.stdout_text())
        combo, listWidget = self.ui.modelComboBox, self.ui.modelsListWidget
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        listWidget.clear()
        for index, model in enumerate(self.models):
            choice = child_reports.model_choice(model)
            combo.addItem(choice.label, choice.model_id)
            combo.setItemData(index, choice.tooltip, qt.Qt.ToolTipRole)
            combo.model().item(index).setEnabled(choice.enabled)  # greyed: cannot run yet
            listWidget.addItem(choice.label)
            listWidget.item(index).setToolTip(choice.tooltip)
        combo.currentIndex = child_reports.first_ready_index(self.models, self._wantedModelId())
        combo.blockSignals(wasBlocked)
        self._onListed(combo.currentIndex)

    def onInstallFromFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Weights (.safetensors) or model card (.json)"), "",
                                              _("Weights or model card (*.safetensors *.json)"))
        if not path:
            return
        if path.lower().endswith(".json"):
            weights = qt.QFileDialog.getOpenFileName(self.parent, _("Weights for this card"), os.path.dirname(path),
                                                     _("Weights (*.safetensors)"))
            if not weights:
                return
            runner = self.logic.startInstallWeights(weightsPath=weights, cardPath=path)
        elif self.selected() is None:
            slicer.util.errorDisplay(_("Select the model these weights belong to first."))
            return
        else:
            runner = self.logic.startInstallWeights(modelId=self.selected()["id"], weightsPath=path)
        self.ui.modelInfoLabel.text = _("Installing and verifying weights...")
        self._startHelper(runner, self._onInstalled)

    def onInstallFromUrl(self) -> None:
        if self.selected() is None:
            slicer.util.errorDisplay(_("Select the model to download first."))
            return
        url = self.ui.weightsUrlLineEdit.text.strip() or None
        self.ui.modelInfoLabel.text = _("Downloading and verifying weights...")
        runner = self.logic.startInstallWeights(modelId=self.selected()["id"], url=url, download=True)
        self._startHelper(runner, self._onInstalled)

    def _onInstalled(self, runner) -> None:
        if runner.status is not ExitStatus.SUCCESS:
            slicer.util.errorDisplay(_("Installing the weights failed: ") + (runner.error_message or runner.stderr_tail()))
        self.onRefreshModels()

    def onOpenModelFolder(self) -> None:
        folder = self.logic.modelFolder()
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))
