"""Model tests run torch on one thread: their tensors are tiny, so a second intra-op thread gains
nothing, and on a shared, oversubscribed CPU it made them 20-100x slower (OpenMP threads spinning
while they wait for each other). The session setting is restored afterwards."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
