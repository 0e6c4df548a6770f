"""Choices offered everywhere (command line, Slicer panel, engine), defined once. No heavy imports.

Pruning levels are ANU-Net's sub-networks L1-L4 (Li et al. 2020, Sec. 3.5, doi:10.1016/j.cag.2020.05.003);
devices are PyTorch devices ("auto": CUDA, else Apple MPS, else the CPU; "cuda" is the first GPU,
"cuda:1".."cuda:3" a workstation's further GPUs; "cuda:N" beyond them is accepted by the CLI); backends run the
networks' forward passes ("auto": OpenVINO on the CPU when installed, else PyTorch).
"""

from __future__ import annotations

PRUNING_LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4")
EXTRA_GPUS = 3  # the panel offers cuda:1..cuda:3 besides "cuda" (the first GPU)
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", *(f"cuda:{i}" for i in range(1, EXTRA_GPUS + 1)), "mps", "cpu")
BACKEND_CHOICES: tuple[str, ...] = ("auto", "pytorch", "openvino")
