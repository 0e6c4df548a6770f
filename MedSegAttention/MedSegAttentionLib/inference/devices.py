"""Pick the compute device: CUDA, else Apple MPS, else CPU; explain a request that cannot be met."""

from __future__ import annotations

import torch

from ..choices import DEVICE_CHOICES
from ..errors import InputError



def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` takes the best available; an explicit choice that is unavailable is an error."""
    choice = (choice or "auto").lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError("CUDA was requested but no CUDA GPU is available; use --device cpu or auto")
        index = choice.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            count = torch.cuda.device_count()
            raise InputError(f"GPU {choice} was requested but this machine has {count} CUDA GPU(s): "
                             f"{', '.join(f'cuda:{i}' for i in range(count))}")
        return torch.device(choice)
    if choice == "mps":
        if not _mps_available():
            raise InputError("Apple MPS was requested but is not available on this machine; use --device cpu or auto")
        return torch.device("mps")
    if choice == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {choice!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def describe_device(device: torch.device) -> str:
    """A human-readable name, e.g. 'cuda:0 (NVIDIA H100, 79.1 GiB)'."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def device_report() -> dict:
    """What this Python can compute on: torch version, CUDA GPUs (index, name, memory), MPS (``medseg devices``)."""
    info: dict = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda": [], "mps": _mps_available(),
                  "choices": list(DEVICE_CHOICES)}
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                info["cuda"].append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    except RuntimeError as exc:  # a broken driver: say so instead of failing the query
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info
