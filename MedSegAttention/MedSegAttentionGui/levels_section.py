"""The ANU-Net pruning-level choice (Li et al. 2020, Sec. 3.4): each level's parameters and measured speed.

Binds ``levelComboBox`` and ``levelInfoLabel`` to the Qt-free
:class:`~MedSegAttentionLib.slicer_support.level_chooser.LevelChooser`, which decides when a table is
shown from the cache and when a ``medseg levels`` child process measures one.
"""

from MedSegAttentionLib.choices import PRUNING_LEVELS
from MedSegAttentionLib.slicer_support import child_reports
from MedSegAttentionLib.slicer_support.level_chooser import LevelChooser, level_key


class LevelsSection:
    """``state()`` returns (model entry, device, devices info, hardware text, busy, packages installed)."""

    def __init__(self, ui, logic, startHelper, state) -> None:
        self.ui, self._startHelper, self._state = ui, startHelper, state
        self.chooser = LevelChooser(logic)
        self.labels = []

    def applyLabels(self) -> None:
        """Level texts on the combo (connecting the parameter node refills it with bare level names)."""
        for index, text in enumerate(self.labels[:self.ui.levelComboBox.count]):
            self.ui.levelComboBox.setItemText(index, text)

    def update(self) -> None:
        """Show the table for the current model and device; measure it in a child process when unknown."""
        model, device, info, hardware, busy, installed = self._state()
        self.ui.levelInfoLabel.visible = bool(child_reports.model_levels(model))
        key = level_key(model, device, info, hardware)
        view = self.chooser.update(key, (model or {}).get("id", ""), device, busy=busy, can_measure=installed)
        if view is not None:
            self._show(view.table)
        if view is not None and view.runner is not None:
            self._startHelper(view.runner, lambda runner, key=self.chooser.key: self._onMeasured(runner, key),
                              lambda runner: self._show(runner.other.get("levels")))

    def _key(self):
        model, device, info, hardware, _busy, _installed = self._state()
        return level_key(model, device, info, hardware)

    def _show(self, table) -> None:
        model = self._state()[0] or {}
        self.labels = child_reports.level_labels(list(PRUNING_LEVELS), table, model.get("level_dice"))
        self.applyLabels()
        self.ui.levelInfoLabel.text = child_reports.level_summary(table)

    def _onMeasured(self, runner, key: str) -> None:
        view = self.chooser.finished(runner, key, self._key())
        if view is not None and view.error:
            self.ui.levelInfoLabel.text = view.error
        elif view is not None:
            self._show(view.table)
        self.update()
