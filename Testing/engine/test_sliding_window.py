"""Sliding-window blending is exact where it must be: whole-volume windows and pointwise networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from MedSegAttentionLib.models import SegmentationNetwork, SegmentationOutput
from MedSegAttentionLib.inference.runcontext import RunContext
from MedSegAttentionLib.inference.sliding_window import importance_map, sliding_window_inference, slicewise_inference, window_starts


class _Conv(SegmentationNetwork):
    """A real conv net of the contract (3 classes, one map) with a receptive field > 1 if asked."""

    name = "test_conv"
    map_names = ("gate",)

    def __init__(self, kernel: int = 1, spatial_dims: int = 3, in_channels: int = 1) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.num_classes, self.size_divisor = spatial_dims, in_channels, 3, 1
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.conv = conv(in_channels, 3, kernel, padding=kernel // 2)

    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        logits = self.conv(x)
        return SegmentationOutput(logits, maps={"gate": torch.sigmoid(logits[:, :1])})


def test_window_starts_cover_the_axis_evenly() -> None:
    assert window_starts(10, 16, 0.5) == [0]
    assert window_starts(64, 32, 0.5) == [0, 16, 32]
    starts = window_starts(70, 32, 0.5)
    assert starts[0] == 0 and starts[-1] == 38 and all(b - a <= 16 for a, b in zip(starts, starts[1:]))


def test_gaussian_importance_is_positive_and_peaks_at_centre() -> None:
    w = importance_map((9, 9, 9), "gaussian", torch.device("cpu"))
    assert w.min() > 0 and w[4, 4, 4] == 1.0 and w[0, 0, 0] < w[4, 4, 0]


def test_one_window_equals_a_whole_volume_pass() -> None:
    net = _Conv(kernel=3).eval()
    volume = torch.randn(1, 16, 20, 24)
    probs, maps = sliding_window_inference(volume, net, (16, 20, 24), RunContext(), with_maps=True)
    with torch.no_grad():
        out = net(volume[None], return_maps=True)
    torch.testing.assert_close(probs, torch.softmax(out.logits, 1)[0])
    torch.testing.assert_close(maps["gate"], out.maps["gate"][0])


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_overlapping_windows_equal_a_whole_volume_pass_for_a_pointwise_net(blend: str) -> None:
    net = _Conv(kernel=1).eval()
    volume = torch.randn(1, 21, 30, 27)
    ctx = RunContext(batch_size=3)
    probs, maps = sliding_window_inference(volume, net, (8, 16, 12), ctx, overlap=0.5, blend=blend, with_maps=True)
    with torch.no_grad():
        out = net(volume[None], return_maps=True)
    torch.testing.assert_close(probs, torch.softmax(out.logits, 1)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps["gate"], out.maps["gate"][0], atol=1e-5, rtol=1e-5)


def test_volume_smaller_than_the_patch_is_padded_and_cropped() -> None:
    net = _Conv(kernel=1).eval()
    probs, _ = sliding_window_inference(torch.randn(1, 5, 6, 7), net, (8, 8, 8), RunContext())
    assert probs.shape == (3, 5, 6, 7)
    torch.testing.assert_close(probs.sum(0), torch.ones(5, 6, 7))


def test_slicewise_with_context_matches_per_slice_calls() -> None:
    net = _Conv(kernel=3, spatial_dims=2, in_channels=3).eval()
    volume = torch.randn(1, 6, 10, 12)
    probs, maps = slicewise_inference(volume, net, RunContext(batch_size=4), context=1, with_maps=True)
    z = 0  # first slice: neighbours clamp to [0, 0, 1]
    x = volume[:, [0, 0, 1]].reshape(1, 3, 10, 12)
    with torch.no_grad():
        expected = torch.softmax(net(x).logits, 1)[0]
    torch.testing.assert_close(probs[:, z], expected)
    assert maps["gate"].shape == (1, 6, 10, 12)


def test_progress_is_monotonic_and_cancel_stops() -> None:
    from MedSegAttentionLib.errors import Cancelled

    seen: list[float] = []
    net = _Conv().eval()
    volume = torch.randn(1, 16, 16, 16)
    sliding_window_inference(volume, net, (8, 8, 8), RunContext(batch_size=2, progress=lambda f, m: seen.append(f)))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 3
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        sliding_window_inference(volume, net, (8, 8, 8), RunContext(batch_size=2, cancel=lambda: next(calls) >= 2))


def test_window_plan_covers_the_volume_only_when_the_card_allows_it() -> None:
    from MedSegAttentionLib.inference.window_plan import computed_voxels, plan_window

    card = (48, 64, 64)
    assert plan_window((44, 74, 92), card, {}) == card  # no max_window_voxels: the card's windows
    # the whole volume, rounded up to multiples of 16 (and of the divisor), never under the card's window
    assert plan_window((44, 74, 92), card, {"max_window_voxels": 400_000}, (8, 8, 8)) == (48, 80, 96)
    assert plan_window((44, 74, 92), card, {"max_window_voxels": 400_000}, (8, 8, 32)) == (48, 80, 96)
    assert plan_window((44, 74, 100), card, {"max_window_voxels": 500_000}, (8, 8, 32)) == (48, 80, 128)
    # one voxel short of the whole volume: the fewest voxels computed spans the axis where that saves most
    assert plan_window((44, 74, 92), card, {"max_window_voxels": 368_639}, (8, 8, 8)) == (48, 80, 64)
    assert plan_window((44, 74, 92), card, {"max_window_voxels": 48 * 80 * 64 - 1}, (8, 8, 8)) == card
    assert plan_window((20, 30, 40), card, {"max_window_voxels": 10**6}) == card  # smaller than one window anyway
    # too large for one window: whole slices in slabs of the card's depth (a prostate T2 on the full-size
    # SIP-Net's grid: 4 windows instead of 144, a third of the voxels computed)
    prostate, slab = (38, 307, 307), (16, 96, 96)
    planned = plan_window(prostate, slab, {"max_window_voxels": 2_000_000}, (8, 8, 8))
    assert planned == (16, 320, 320)
    assert computed_voxels(prostate, planned, 0.5) * 3 < computed_voxels(prostate, slab, 0.5)
    assert plan_window(prostate, slab, {"max_window_voxels": 6_000_000}, (8, 8, 8)) == (48, 320, 320)
    # scans of similar size share one window shape (a backend that checks each shape does it once)
    assert len({plan_window((44, y, x), card, {"max_window_voxels": 10**6}, (8, 8, 8)) for y in range(66, 81) for x in range(82, 97)}) == 1


def test_the_sliding_window_pipeline_runs_one_planned_window_over_the_volume() -> None:
    """With ``max_window_voxels`` the pipeline's answer is the network's whole-volume pass (one window,
    nothing blended); without it, overlapping card windows, which differ at their seams for a 3x3 net."""
    from MedSegAttentionLib.inference.pipelines import run_sliding_window

    net = _Conv(kernel=3).eval()
    volume = torch.randn(1, 16, 30, 40)
    inference = {"mode": "sliding_window", "patch_size": [16, 16, 16], "overlap": 0.5}
    with torch.no_grad():
        padded = torch.nn.functional.pad(volume[None], (0, 8, 0, 2, 0, 0), mode="replicate")
        whole = torch.softmax(net(padded).logits, 1)[0, :, :16, :30, :40]
    planned, _ = run_sliding_window(volume, {"main": net}, {**inference, "max_window_voxels": 16 * 32 * 48}, RunContext(), False)
    torch.testing.assert_close(planned, whole)
    fixed, _ = run_sliding_window(volume, {"main": net}, inference, RunContext(), False)
    assert fixed.shape == whole.shape and not torch.allclose(fixed, whole, atol=1e-4)
