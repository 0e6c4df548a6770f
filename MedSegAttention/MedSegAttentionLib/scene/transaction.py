"""All-or-nothing scene changes: remember every node added, remove them all on failure or cancel."""

from __future__ import annotations

from types import TracebackType

import slicer
import vtk


class SceneTransaction:
    """Records nodes added to ``scene`` while active; :meth:`rollback` removes them (newest first).

    Use as a context manager: an exception inside the block rolls back and propagates; a clean exit
    commits. Nodes the caller adds to the scene in the block are tracked too, so helpers need no
    bookkeeping. Subject-hierarchy items of removed nodes go with them.
    """

    def __init__(self, scene: "slicer.vtkMRMLScene") -> None:
        self.scene = scene
        self._added: list[str] = []
        self._observer: int | None = None

    @property
    def added_node_ids(self) -> list[str]:
        return list(self._added)

    def begin(self) -> "SceneTransaction":
        if self._observer is None:
            self._observer = self.scene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, self._on_node_added)
        return self

    def _on_node_added(self, caller: object, event: str, call_data: object = None) -> None:
        node = call_data
        if node is not None and node.GetID():
            self._added.append(node.GetID())

    # VTK passes the added node as call data only when the callback declares its type.
    _on_node_added.CallDataType = vtk.VTK_OBJECT  # type: ignore[attr-defined]

    def _stop(self) -> None:
        if self._observer is not None:
            self.scene.RemoveObserver(self._observer)
            self._observer = None

    def commit(self) -> list[str]:
        """Stop tracking; keep the nodes. Returns their IDs."""
        self._stop()
        return self.added_node_ids

    def rollback(self) -> None:
        """Stop tracking and remove every node added since :meth:`begin`."""
        self._stop()
        for node_id in reversed(self._added):
            node = self.scene.GetNodeByID(node_id)
            if node is not None:
                self.scene.RemoveNode(node)
        self._added.clear()

    def __enter__(self) -> "SceneTransaction":
        return self.begin()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
