"""The screenshot script's picture: Slicer's slice pipeline shows the outline and the heat map as the module set them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML) is not installed")
pytest.importorskip("matplotlib", reason="matplotlib draws the frame and legend")
pytest.importorskip("PIL", reason="Pillow writes the 256-colour PNG")

import make_screenshot  # noqa: E402

import slicer_scenarios  # noqa: E402
from MedSegAttentionLib.scene import import_result  # noqa: E402


@pytest.fixture()
def view_and_result(tmp_path: Path):
    scene = make_screenshot.new_scene()
    volume, image, _ = slicer_scenarios._setup_input(scene, tmp_path)
    imported = import_result(scene, slicer_scenarios.write_result_folder(tmp_path / "result", image), volume)
    return make_screenshot.SliceView(scene, volume, imported, size=240), imported


def _near(picture: np.ndarray, rgb: tuple[float, float, float], tolerance: int = 12) -> int:
    target = np.array(rgb) * 255
    return int((np.abs(picture.astype(float) - target).max(axis=-1) <= tolerance).sum())


def test_slice_view_draws_outlines_and_the_heat_map(view_and_result) -> None:
    view, imported = view_and_result
    liver = slicer_scenarios.LABELS[0]["color"]
    plain = view.image(None, 0.5)
    assert plain.shape[1] == 240 and plain.dtype == np.uint8
    grey = (np.ptp(plain.astype(int), axis=-1) == 0) & (plain[..., 0] > 30)
    assert grey.sum() > 2000, "the input volume is not drawn in grey behind"
    assert _near(plain, liver) > 10, "the liver outline is not drawn in its segment colour"
    coloured = lambda picture: int((np.ptp(picture.astype(int), axis=-1) > 30).sum())  # noqa: E731 - not grey
    assert coloured(plain) < 2 * _near(plain, liver) + 200, "without a map only the outlines are in colour"
    heat = view.image(imported.map_nodes["attention_1"], 1.0)
    assert coloured(heat) > 5 * coloured(plain), "the heat map does not tint the slice"
    assert not np.array_equal(heat, view.image(imported.map_nodes["saliency"], 1.0)), "switching maps changes nothing"


def test_render_writes_a_small_framed_png(view_and_result, tmp_path: Path) -> None:
    view, imported = view_and_result
    out = make_screenshot.render(view, imported, "attention_1", tmp_path / "shot.png", "test data")
    from PIL import Image

    picture = Image.open(out)
    assert picture.size[0] >= 600 and picture.size[1] >= 400
    assert out.stat().st_size < 300 * 1024
    assert len(picture.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 50, "a nearly blank picture"
