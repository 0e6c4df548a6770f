"""Which pruning-level table the panel shows, and when to measure one (ANU-Net L1-L4, Li et al. 2020 Sec. 3.4).

The table (parameters and ms/slice per level) belongs to a model, a device and the hardware the
device query described. A cached table is shown at once; otherwise one child process
(``medseg levels``) measures it while the panel shows its rows as they arrive. Qt-free: the widget
calls :meth:`LevelChooser.update` when the model, device or run state changes and
:meth:`LevelChooser.finished` when the measurement ends, and shows what they return.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from .child_reports import model_levels
from .process_runner import ExitStatus, ProcessRunner

__all__ = ["LevelChooser", "LevelView", "level_key"]


class LevelTables(Protocol):
    """What the chooser needs of the panel logic (:class:`~.panel_logic.PanelLogic` has these)."""

    def cachedLevelTable(self, key: str) -> dict[str, Any] | None: ...  # noqa: N802

    def storeLevelTable(self, key: str, table: dict[str, Any]) -> None: ...  # noqa: N802

    def startLevelSpeed(self, modelId: str, device: str) -> ProcessRunner: ...  # noqa: N802,N803


@dataclass(frozen=True)
class LevelView:
    """What to show: a table (None: not measured yet), or an error line; and a runner now measuring."""

    table: dict[str, Any] | None = None
    error: str = ""
    runner: ProcessRunner | None = None


def level_key(model: dict[str, Any] | None, device: str, devices_info: dict[str, Any] | None, hardware: str) -> str | None:
    """Key of the table for this model, device and hardware description; None while it cannot be measured
    (no model with levels, or the device query has not found torch yet)."""
    if not model_levels(model) or not (devices_info or {}).get("torch"):
        return None
    digest = hashlib.sha1(hardware.encode("utf-8")).hexdigest()[:10]
    return f"{model['id']}-{device}-{digest}"


class LevelChooser:
    """Tracks the table shown and the one measurement in flight."""

    def __init__(self, tables: LevelTables) -> None:
        self.tables = tables
        self.key: str | None = None  # the table shown or being measured
        self.runner: ProcessRunner | None = None

    def update(self, key: str | None, model_id: str, device: str, busy: bool, can_measure: bool) -> LevelView | None:
        """The view for ``key`` when it changed, starting a measurement if nothing is cached; None: keep the
        current view (same key, a measurement or a segmentation running, or packages still missing)."""
        if key is None or key == self.key or self.runner is not None or busy:
            return None
        cached = self.tables.cachedLevelTable(key)
        if cached is None and not can_measure:
            return None
        self.key = key
        if cached is None:
            self.runner = self.tables.startLevelSpeed(model_id, device)
        return LevelView(table=cached, runner=self.runner)

    def finished(self, runner: ProcessRunner, key: str, current_key: str | None) -> LevelView | None:
        """Store a measured table; the view to show if ``key`` is still the one shown (None otherwise).
        If the choice changed meanwhile, the next :meth:`update` measures the new one."""
        self.runner = None
        table = runner.other.get("levels")
        ok = runner.status is ExitStatus.SUCCESS and bool(table)
        if ok:
            self.tables.storeLevelTable(key, table)
        view = None
        if key == self.key:
            view = LevelView(table=table) if ok else LevelView(
                error="Could not measure the levels: " + (runner.error_message or runner.stderr_tail()))
        if key != current_key:
            self.key = None
        return view
