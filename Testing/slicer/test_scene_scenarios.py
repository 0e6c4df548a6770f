"""The scene scenarios (shared with the module's self-test) against real MRML from slicer-core."""

from __future__ import annotations

from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML) is not installed")

import slicer_scenarios  # noqa: E402


@pytest.mark.parametrize("name", list(slicer_scenarios.SCENARIOS))
def test_scenario(name: str, tmp_path: Path) -> None:
    scene = slicer.vtkMRMLScene()
    slicer_scenarios.SCENARIOS[name](scene, tmp_path)
