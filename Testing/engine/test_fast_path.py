"""The engine's fast paths (channels-last memory layout, capped CPU batch, fixed batch shape for compiled
networks) give the reference answer."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from MedSegAttentionLib.inference.engine import CPU_MAX_BATCH, segment
from MedSegAttentionLib.models import build_network
from MedSegAttentionLib.inference.runcontext import RunContext, channels_last_format
from MedSegAttentionLib.inference.sliding_window import sliding_window_inference, slicewise_inference
from model_cards import TINY_ANUNET, TINY_RAUNET_3D, TINY_SIPNET, install_random_model
from volumes import phantom_volume


def _both_layouts(config: dict, run) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    net = build_network(config).eval()
    reference = run(net, RunContext(batch_size=3, channels_last=False))
    fmt = channels_last_format(net.spatial_dims)
    fast_ctx = RunContext(batch_size=2, channels_last=True)
    assert fast_ctx.use_channels_last(net.spatial_dims)
    fast = run(net.to(memory_format=fmt), fast_ctx)
    torch.testing.assert_close(fast[0], reference[0], atol=1e-4, rtol=1e-4)
    assert set(fast[1]) == set(reference[1]) and fast[1]
    for name in reference[1]:
        torch.testing.assert_close(fast[1][name], reference[1][name], atol=1e-4, rtol=1e-4)


def test_sliding_window_channels_last_equals_the_reference_layout() -> None:
    volume = torch.randn(1, 20, 40, 36)
    for config in (TINY_SIPNET, TINY_RAUNET_3D):
        _both_layouts(config, lambda net, ctx: sliding_window_inference(volume, net, (16, 16, 16), ctx, 0.5, with_maps=True))


def test_slicewise_channels_last_equals_the_reference_layout() -> None:
    volume = torch.randn(1, 5, 32, 28)
    _both_layouts(TINY_ANUNET, lambda net, ctx: slicewise_inference(volume, net, ctx, with_maps=True))


def test_cpu_caps_the_cards_batch_unless_the_user_chose_one(tmp_path) -> None:
    store, model_id, _ = install_random_model(tmp_path / "store")
    card = store.card(model_id)
    card.inference["batch_size"] = 8
    sizes: list[int] = []
    network = store.load_networks(card)["main"]
    original = network.forward

    def recording_forward(x, return_maps=False):  # noqa: ANN001, ANN202
        sizes.append(x.shape[0])
        return original(x, return_maps=return_maps)

    network.forward = recording_forward
    volume, _ = phantom_volume(size_zyx=(24, 48, 40))
    auto = segment(volume, card, store, device="cpu", networks={"main": network}, backend="pytorch")
    assert max(sizes) == CPU_MAX_BATCH
    sizes.clear()
    chosen = segment(volume, card, store, device="cpu", networks={"main": network}, batch_size=5, backend="pytorch")
    assert max(sizes) == 5
    np.testing.assert_array_equal(sitk.GetArrayFromImage(auto.label), sitk.GetArrayFromImage(chosen.label))


def _recording(net: torch.nn.Module, sizes: list[int]) -> torch.nn.Module:
    net.register_forward_pre_hook(lambda _module, args: sizes.append(args[0].shape[0]))
    return net


def test_fixed_batch_pads_the_last_batch_and_keeps_the_answer() -> None:
    """With ``fixed_batch`` (a compiled network) every batch has the full size; the results are unchanged."""
    torch.manual_seed(0)
    volume = torch.randn(1, 20, 40, 36)  # 2 x 4 x 4 = 32 windows of 16 with overlap 0.5: the last of 3 is short
    for config, run in ((TINY_SIPNET, lambda net, ctx: sliding_window_inference(volume, net, (16, 16, 16), ctx, 0.5, with_maps=True)),
                        (TINY_ANUNET, lambda net, ctx: slicewise_inference(volume[:, :7, :32, :28], net, ctx, with_maps=True))):
        net = build_network(config).eval()
        plain_sizes: list[int] = []
        fixed_sizes: list[int] = []
        plain = run(_recording(net, plain_sizes), RunContext(batch_size=3))
        net._forward_pre_hooks.clear()
        fixed = run(_recording(net, fixed_sizes), RunContext(batch_size=3, fixed_batch=True))
        assert plain_sizes[-1] < 3 and set(fixed_sizes) == {3} and len(fixed_sizes) == len(plain_sizes)
        torch.testing.assert_close(fixed[0], plain[0])
        for name in plain[1]:
            torch.testing.assert_close(fixed[1][name], plain[1][name])


def test_compile_off_cuda_runs_uncompiled_and_says_so(tmp_path) -> None:
    store, model_id, _ = install_random_model(tmp_path / "store")
    volume, _ = phantom_volume(size_zyx=(24, 48, 40))
    plain = segment(volume, store.card(model_id), store, device="cpu", backend="pytorch", maps=False)
    asked = segment(volume, store.card(model_id), store, device="cpu", backend="pytorch", maps=False, compile=True)
    assert any("compile is used on CUDA GPUs only" in w for w in asked.warnings)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(asked.label), sitk.GetArrayFromImage(plain.label))
