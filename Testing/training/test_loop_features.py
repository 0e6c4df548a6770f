"""Fit-loop features: RSTN's crop source, TensorBoard logs (optional extra) or a clear note, AMP choice,
and the input-channel check."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import tiny_overrides
from MedSegAttentionLib.models import build_network
from training.loop import _amp, fit
from training.recipes import load_recipe


class _FixedCoarse(torch.nn.Module):
    """Stands in for RSTN's coarse network: foreground logits +10 inside ``square`` of sample 0, -10 elsewhere."""

    def __init__(self, square: tuple[slice, slice]) -> None:
        super().__init__()
        self.square = square

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Two-class logits of the three input slices: foreground in the square of the first slice only."""
        fg = torch.full((x.shape[0], 3, *x.shape[2:]), -10.0)
        fg[(0, 0, *self.square)] = 10.0
        return torch.stack([torch.zeros_like(fg), fg], dim=2).flatten(1, 2)


def test_rstn_crops_from_ground_truth_then_from_the_coarse_prediction() -> None:
    net = build_network({"name": "rstn", "in_channels": 3, "num_classes": 2, "base_channels": 4, "margin": 2})
    square = (slice(4, 9), slice(10, 20))
    net.coarse = _FixedCoarse(square)
    x = torch.rand(2, 3, 30, 30)
    labels = torch.zeros(2, 30, 30, dtype=torch.long)
    labels[:, 20:25, 3:8] = 1
    truth = (labels > 0).float()
    torch.testing.assert_close(net.training_inputs(x, labels, from_prediction=False)["crop_mask"], truth)
    mask = net.training_inputs(x, labels, from_prediction=True)["crop_mask"]
    expected0 = torch.zeros(30, 30)
    expected0[square] = 1.0
    torch.testing.assert_close(mask[0], expected0)  # the coarse prediction, not the ground truth
    torch.testing.assert_close(mask[1], truth[1])  # empty prediction: fall back to the ground truth
    three = torch.zeros(2, 3, 30, 30, dtype=torch.long)  # labels of the three slices: their union
    three[:, 0, 1:3, 1:3] = 1
    three[:, 2, 20:25, 3:8] = 1
    union = net.training_inputs(x, three, from_prediction=False)["crop_mask"]
    assert union[0, 1:3, 1:3].all() and union[0, 20:25, 3:8].all() and union.sum() == 2 * (4 + 25)


def test_rstn_fit_switches_crop_source_at_the_configured_step(phantom_sets, tmp_path, monkeypatch) -> None:
    from MedSegAttentionLib.models.rstn import RSTN

    calls: list[bool] = []
    original = RSTN.training_inputs
    monkeypatch.setattr(RSTN, "training_inputs", lambda net, x, y, from_prediction: calls.append(from_prediction)
                        or original(net, x, y, from_prediction))
    name = "rstn-pancreas-ct"
    recipe = load_recipe(name, tiny_overrides(name, steps=4, extra=["rstn.ground_truth_crop_steps=2"]))
    fit(recipe.for_stage("axial"), phantom_sets["pancreas"], "all", tmp_path, device="cpu", progress=False)
    assert calls == [False, False, True, True]


def _tiny_fit(phantom_sets, tmp_path):
    name = "sipnet-prostate-mr"
    recipe = load_recipe(name, tiny_overrides(name, steps=2, extra=["train.val_every=1"]))
    return fit(recipe, phantom_sets["prostate"], 0, tmp_path, device="cpu", progress=False)


def test_without_tensorboard_a_clear_note_and_metrics_jsonl(phantom_sets, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    result = _tiny_fit(phantom_sets, tmp_path)
    err = capsys.readouterr().err
    assert "'tensorboard' package is not installed" in err and "medsegattention[train]" in err
    assert not (result.run_dir / "tb").exists()
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
    assert [r["step"] for r in rows if "val/dice" in r] == [1, 2]


def test_tensorboard_logs_when_installed(phantom_sets, tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard (the 'train' extra) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _tiny_fit(phantom_sets, tmp_path)
    events = EventAccumulator(str(result.run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/dice", "val/hd95"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    jsonl = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    dice = [r["val/dice"] for r in jsonl if "val/dice" in r]
    assert [e.value for e in events.Scalars("val/dice")] == pytest.approx(dice)


def test_mixed_precision_only_on_cuda(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _amp("bf16", cpu) == (False, torch.float32)  # CPU runs in float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert _amp("bf16", cuda) == (True, torch.bfloat16)
    assert _amp("fp16", cuda) == (True, torch.float16)  # with a GradScaler in the loop
    assert _amp("none", cuda) == (False, torch.float32)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert _amp("bf16", cuda) == (True, torch.float16)  # older GPUs: float16 with loss scaling
    for device in (cpu, cuda):  # a typo is an error on every device
        with pytest.raises(ValueError, match="train.amp"):
            _amp("int8", device)


def test_network_input_channels_must_match_the_data(phantom_sets, tmp_path) -> None:
    name = "rstn-pancreas-ct"  # 3 input channels = 1 CT channel x 3 stacked slices
    recipe = load_recipe(name, tiny_overrides(name, extra=["card_overrides.inference.slice_context=2"]))
    with pytest.raises(ValueError, match=r"takes 3 input channel\(s\) but the data gives 1 channel\(s\) x 5 stacked slices"):
        fit(recipe.for_stage("axial"), phantom_sets["pancreas"], 0, tmp_path, device="cpu", progress=False)
