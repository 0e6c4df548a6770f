"""Test-time mirroring: members mirrored back exactly, disagreement as uncertainty, engine and CLI switches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSegAttentionLib.cli import main as medseg
from MedSegAttentionLib.inference.engine import segment
from MedSegAttentionLib.inference.runcontext import RunContext
from MedSegAttentionLib.inference.tta import UNCERTAINTY_MAP, mirror_members, predict_mirrored
from model_cards import install_random_model, tiny_card
from volumes import phantom_volume


def _threshold_pipeline(volume, networks, inference, ctx, with_maps):  # noqa: ANN001
    """Mirror-equivariant 'network': foreground where the image is bright; the image itself as a map."""
    fg = (volume[0] > 0.5).float()
    return torch.stack([1 - fg, fg]), ({"image": volume[:1].clone()} if with_maps else {})


def _ramp_pipeline(volume, networks, inference, ctx, with_maps):  # noqa: ANN001
    """Not equivariant: foreground probability rises along x whatever the input."""
    x = torch.linspace(0, 1, volume.shape[-1]).expand(volume.shape[1:])
    return torch.stack([1 - x, x]), {}


def test_mirror_members_are_every_subset_of_the_axes_identity_first() -> None:
    members = mirror_members([0, 1, 2])
    assert members[0] == () and len(members) == 8 and len(set(members)) == 8
    assert mirror_members([2, 1]) == [(), (1,), (2,), (1, 2)]
    with pytest.raises(ValueError, match="spatial axes"):
        mirror_members([3])


def test_each_member_is_mirrored_back_so_an_equivariant_model_is_unchanged() -> None:
    """Flip of a flip: a mirror-equivariant prediction is reproduced exactly, with zero uncertainty."""
    volume = torch.rand(1, 5, 6, 7)
    single, maps = _threshold_pipeline(volume, {}, {}, None, True)
    mean, mean_maps = predict_mirrored(_threshold_pipeline, volume, {}, {}, RunContext(device=torch.device("cpu")),
                                       True, [0, 1, 2])
    assert torch.equal(mean, single)
    assert torch.allclose(mean_maps["image"], maps["image"])
    assert float(mean_maps[UNCERTAINTY_MAP].abs().max()) == 0.0


def test_disagreeing_members_average_and_show_as_uncertainty() -> None:
    volume = torch.rand(1, 4, 4, 9)
    mean, maps = predict_mirrored(_ramp_pipeline, volume, {}, {}, RunContext(device=torch.device("cpu")), True, [2])
    assert torch.allclose(mean[1], torch.full_like(mean[1], 0.5))  # ramp and mirrored ramp average to 0.5
    unc = maps[UNCERTAINTY_MAP][0]
    assert unc.shape == volume.shape[1:] and float(unc.min()) >= 0 and float(unc.max()) <= 1
    assert float(unc[..., 0].mean()) == pytest.approx(1.0) and float(unc[..., 4].mean()) == pytest.approx(0.0, abs=1e-6)
    _, no_maps = predict_mirrored(_ramp_pipeline, volume, {}, {}, RunContext(device=torch.device("cpu")), False, [2])
    assert no_maps == {}


def _uncertainty_card() -> dict:
    card = tiny_card("tiny-tta-mr", tta=True, mirror_axes=[0, 1, 2])
    card["maps"].append({"name": "uncertainty", "title": "Uncertainty: 0 = mirrored predictions agree, 1 = split",
                         "kind": "uncertainty"})
    return card


def test_engine_uses_the_card_default_and_the_switch(tmp_path) -> None:
    store, model_id, _ = install_random_model(tmp_path / "store", _uncertainty_card())
    card = store.card(model_id)
    volume, _ = phantom_volume(oblique=True)
    on = segment(volume, card, store, device="cpu")  # card says tta: true
    assert on.timings["tta_passes"] == 8 and UNCERTAINTY_MAP in on.maps
    unc = on.maps[UNCERTAINTY_MAP]
    assert unc.GetSize() == volume.GetSize() and unc.GetDirection() == volume.GetDirection()
    off = segment(volume, card, store, device="cpu", tta=False)
    assert "tta_passes" not in off.timings and UNCERTAINTY_MAP not in off.maps and not off.warnings
    asked = segment(volume, card, store, device="cpu", tta=False, maps=[UNCERTAINTY_MAP])
    assert asked.maps == {} and any("test-time mirroring" in w for w in asked.warnings)


def test_cli_tta_flag_prints_its_cost_and_writes_the_map(tmp_path, capsys) -> None:
    store, model_id, _ = install_random_model(tmp_path / "store", tiny_card("tiny-tta-off-mr"))
    volume, _ = phantom_volume()
    image = tmp_path / "case.nrrd"
    sitk.WriteImage(volume, str(image))
    args = ["--model-dir", str(store.root), "segment", str(image), "--model", model_id, "--device", "cpu",
            "--output-dir", str(tmp_path / "out"), "--no-montage"]
    assert medseg(args + ["--tta"]) == 0
    err = capsys.readouterr().err
    assert "test-time mirroring: 8 passes" in err
    doc = json.loads((tmp_path / "out" / "case" / "result.json").read_text())
    assert doc["timings"]["tta_passes"] == 8
    assert medseg(args + ["--no-tta", "--overwrite"]) == 0
    assert "test-time mirroring" not in capsys.readouterr().err
    assert np.isfinite(doc["timings"]["inference"])
