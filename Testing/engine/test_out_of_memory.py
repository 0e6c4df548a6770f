"""Out of memory: the engine halves the window batch, says so, and gives the same answer; when even
one window does not fit on the last device it stops with a specific error."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSegAttentionLib.inference.engine import segment
from MedSegAttentionLib.errors import OutOfMemory
from MedSegAttentionLib.models.sipnet import SIPNet
from model_cards import TINY_SIPNET, install_random_model
from volumes import phantom_volume


class MemoryLimitedSIPNet(SIPNet):
    """A real SIP-Net whose device 'runs out of memory' above ``max_batch`` windows per batch."""

    max_batch = 1

    def forward(self, x: torch.Tensor, return_maps: bool = False):  # noqa: ANN201
        if x.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError(f"simulated: {x.shape[0]} windows do not fit")
        return super().forward(x, return_maps=return_maps)


def _limited_copy(store, model_id: str, max_batch: int) -> MemoryLimitedSIPNet:
    net = MemoryLimitedSIPNet(**{k: v for k, v in TINY_SIPNET.items() if k != "name"})
    net.load_state_dict(store.load_networks(store.card(model_id))["main"].state_dict())
    net.max_batch = max_batch
    return net.eval()


def test_batch_is_halved_until_it_fits_and_the_result_is_unchanged(tmp_path) -> None:
    store, model_id, _ = install_random_model(tmp_path / "store")
    card = store.card(model_id)
    volume, _ = phantom_volume(size_zyx=(20, 40, 36))
    reference = segment(volume, card, store, device="cpu", batch_size=1)
    limited = segment(volume, card, store, device="cpu", batch_size=8, networks={"main": _limited_copy(store, model_id, 1)},
                      backend="pytorch")  # the PyTorch path's memory handling (OpenVINO falls back to it)
    retries = [w for w in limited.warnings if "out of memory" in w]
    assert [w.split("retrying with ")[1] for w in retries] == ["4 window(s) per batch", "2 window(s) per batch", "1 window(s) per batch"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(limited.label), sitk.GetArrayFromImage(reference.label))
    for name in reference.maps:
        np.testing.assert_allclose(sitk.GetArrayFromImage(limited.maps[name]), sitk.GetArrayFromImage(reference.maps[name]), atol=1e-5)


def test_no_memory_even_for_one_window_on_the_cpu_is_a_specific_error(tmp_path) -> None:
    store, model_id, _ = install_random_model(tmp_path / "store")
    with pytest.raises(OutOfMemory, match="out of memory on the CPU"):
        segment(phantom_volume()[0], store.card(model_id), store, device="cpu", batch_size=2,
                networks={"main": _limited_copy(store, model_id, 0)}, backend="pytorch")
