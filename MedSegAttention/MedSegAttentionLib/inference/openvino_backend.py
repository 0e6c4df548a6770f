"""OpenVINO as the CPU runtime of a network's forward pass (optional; PyTorch is the reference and fallback).

OpenVINO (https://docs.openvino.ai) runs the same trained networks 2-5x faster than PyTorch on an
ordinary CPU (measured in docs/benchmarks.md). What is converted is only the network proper,
:meth:`SegmentationNetwork.forward_padded`, traced with dynamic batch and spatial sizes; the padding to
the network's size rule before it and the cropping and resizing of its maps after it stay the
PyTorch code of :meth:`SegmentationNetwork.forward`, so both backends see the same input and give the
same output layout. The converted model is cached as OpenVINO IR under ``cache_dir`` (the model
store's ``cache/openvino``), keyed by the network's configuration, weights and whether maps are asked
for: the first run of a model converts it (seconds), later runs read it back.

Trust but verify: for every new input shape the first sample is also run by PyTorch, and a
probability difference above :data:`AGREEMENT` sends that network back to PyTorch with a warning; the
shapes that agreed are recorded beside the cached IR, so later runs skip the check.
Networks whose engine path is not a plain forward pass (RSTN's coarse pass and refinement rounds) are
never routed here (see :func:`.sliding_window._predict`).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..choices import BACKEND_CHOICES
from ..errors import InputError
from ..models import SegmentationNetwork, SegmentationOutput

__all__ = ["AGREEMENT", "OpenVINORunner", "choose_backend", "describe_backend", "openvino_version"]

#: largest difference of a class probability between OpenVINO and PyTorch that counts as the same answer
AGREEMENT = 1e-3


def openvino_version() -> str | None:
    """The installed OpenVINO version ("2026.4.1"), or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__).split("-")[0]


_LOGITS, _MAP = "logits", "map:"  # names of the converted model's outputs: the logits and "map:<name>"


def choose_backend(requested: str, device: torch.device) -> str:
    """``pytorch`` or ``openvino`` for a run on ``device``: ``auto`` takes OpenVINO on the CPU when it
    is installed, PyTorch otherwise (GPUs always run PyTorch); asking for OpenVINO where it cannot run
    is an error that says why."""
    if requested not in BACKEND_CHOICES:
        raise InputError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {requested!r}")
    if requested == "pytorch":
        return requested
    if device.type != "cpu":
        if requested == "openvino":
            raise InputError(f"the OpenVINO backend runs on the CPU; the run is on {device} (use --device cpu)")
        return "pytorch"
    if openvino_version() is None:
        if requested == "openvino":
            raise InputError("the OpenVINO backend needs the openvino package: pip install openvino")
        return "pytorch"
    return "openvino"


def describe_backend(backend: str) -> str:
    """"openvino 2026.4.1" or "pytorch 2.13.0": what a result records."""
    return f"openvino {openvino_version()}" if backend == "openvino" else f"pytorch {torch.__version__.split('+')[0]}"


class _Body(torch.nn.Module):
    """``forward_padded`` as a traceable function: (logits, *maps in name order); ``names`` after a call."""

    def __init__(self, net: SegmentationNetwork, with_maps: bool) -> None:
        super().__init__()
        self.net, self.with_maps, self.names = net, with_maps, [_LOGITS]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net.forward_padded(x, self.with_maps)
        maps = sorted(out.maps) if self.with_maps else []
        self.names = [_LOGITS] + [_MAP + name for name in maps]
        return (out.logits, *[out.maps[name] for name in maps])


def _model_key(net: SegmentationNetwork, with_maps: bool, version: str) -> str:
    """Cache key: configuration, every weight and buffer, maps on/off, OpenVINO and PyTorch versions."""
    digest = hashlib.sha256(json.dumps([net.config, with_maps, version, torch.__version__], sort_keys=True,
                                       default=str).encode())
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{net.name}-{digest.hexdigest()[:24]}"


def _read_checked(record: Path) -> set[tuple[int, ...]]:
    """The input shapes a cached IR was checked on (none when the record is absent or unreadable)."""
    try:
        return {tuple(int(v) for v in shape) for shape in json.loads(record.read_text(encoding="utf-8"))}
    except (OSError, ValueError, TypeError):
        return set()


class OpenVINORunner:
    """Forward passes of networks on the CPU through OpenVINO, converted once and cached.

    ``warn`` receives a sentence when a network falls back to PyTorch (conversion failed, or the
    answers disagreed). ``prepare_seconds`` adds up the time spent converting or loading models.
    """

    def __init__(self, cache_dir: Path | None = None, threads: int | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        import openvino as ov

        self._ov, self.version = ov, openvino_version() or "unknown"
        self.core = ov.Core()
        self.cache_dir = cache_dir
        if cache_dir is not None:  # OpenVINO's own cache of compiled models: later runs load faster
            self.core.set_property({"CACHE_DIR": str(Path(cache_dir) / "compiled")})
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        self.warn = warn or (lambda message: None)
        self.prepare_seconds = 0.0
        self.ran: set[int] = set()  # ids of the networks whose forward pass OpenVINO computed (callers may clear it)
        self._compiled: dict[tuple[int, bool], object] = {}
        self._checked: set[tuple[int, bool, tuple[int, ...]]] = set()
        self._paths: dict[tuple[int, bool], Path] = {}  # the cached IR of each converted (network, maps) pair
        self._refused: set[int] = set()
        self._lock = threading.Lock()

    def needs_preparation(self, net: SegmentationNetwork, with_maps: bool) -> bool:
        """True until this network (with or without maps) is converted or loaded in this runner."""
        return (id(net), with_maps) not in self._compiled and id(net) not in self._refused

    def accepts(self, net: SegmentationNetwork) -> bool:
        """False once a network fell back to PyTorch."""
        return id(net) not in self._refused

    def forward(self, net: SegmentationNetwork, x: torch.Tensor, return_maps: bool) -> SegmentationOutput | None:
        """``net(x, return_maps)`` computed by OpenVINO, or None if this network runs on PyTorch."""
        net.check_input(x)
        spatial = tuple(x.shape[2:])
        padded = net.pad_to_divisor(x.float()).contiguous()
        shape = tuple(padded.shape[1:])
        compiled = self._compiled_model(net, return_maps, shape)
        if compiled is None:
            return None
        try:
            results = compiled(padded.numpy())
        except Exception as err:  # noqa: BLE001 -- e.g. out of memory: PyTorch's path handles it (smaller batches)
            self._refuse(net, f"OpenVINO failed on {net.name} ({type(err).__name__}: {err}); it runs on PyTorch")
            return None
        values = {port.get_any_name(): torch.from_numpy(np.asarray(results[port])) for port in compiled.outputs}
        maps = {name[len(_MAP):]: value for name, value in values.items() if name.startswith(_MAP)}
        out = SegmentationOutput(logits=values[_LOGITS], maps=maps)
        if (id(net), return_maps, shape) not in self._checked:
            if not self._agrees(net, padded[:1], out.logits[:1]):
                return None
            self._remember_checked(net, return_maps, shape)
        self.ran.add(id(net))
        return net._crop_output(out, spatial)

    def _agrees(self, net: SegmentationNetwork, sample: torch.Tensor, logits: torch.Tensor) -> bool:
        with torch.inference_mode():
            reference = net.forward_padded(sample, False).logits.float()
        difference = float((torch.softmax(reference, 1) - torch.softmax(logits.float(), 1)).abs().max())
        if difference > AGREEMENT:
            self._refuse(net, f"OpenVINO and PyTorch disagree on {net.name} (probabilities differ by up to "
                              f"{difference:.2g}); it runs on PyTorch")
            return False
        return True

    def _remember_checked(self, net: SegmentationNetwork, with_maps: bool, shape: tuple[int, ...]) -> None:
        """Note an input shape on which the converted model agreed with PyTorch, also for later runs
        (``<key>.checked.json`` beside the cached IR: the same IR gives the same answer again)."""
        self._checked.add((id(net), with_maps, shape))
        path = self._paths.get((id(net), with_maps))
        if path is None:
            return
        record = path.with_suffix(".checked.json")
        shapes = _read_checked(record) | {shape}
        partial = record.with_name(record.name + ".partial")
        partial.write_text(json.dumps(sorted(list(s) for s in shapes)), encoding="utf-8")
        partial.replace(record)

    def _refuse(self, net: SegmentationNetwork, message: str) -> None:
        self._refused.add(id(net))
        self.ran.discard(id(net))
        self.warn(message)

    def _compiled_model(self, net: SegmentationNetwork, with_maps: bool, example_shape: tuple[int, ...]) -> object | None:
        if id(net) in self._refused:
            return None
        key = (id(net), with_maps)
        with self._lock:
            if key not in self._compiled:
                t0 = time.perf_counter()
                try:
                    model = self._read_or_convert(net, with_maps, example_shape)
                    self._compiled[key] = self.core.compile_model(model, "CPU", self.config)
                except Exception as err:  # noqa: BLE001 -- any conversion failure means: use PyTorch
                    self._refuse(net, f"OpenVINO could not convert {net.name} ({type(err).__name__}: {err}); "
                                      "it runs on PyTorch")
                    return None
                finally:
                    self.prepare_seconds += time.perf_counter() - t0
            return self._compiled[key]

    def _read_or_convert(self, net: SegmentationNetwork, with_maps: bool, example_shape: tuple[int, ...]) -> object:
        path = None
        if self.cache_dir is not None:
            path = Path(self.cache_dir) / f"{_model_key(net, with_maps, self.version)}.xml"
            self._paths[(id(net), with_maps)] = path
            if path.is_file() and path.with_suffix(".bin").is_file():
                self._checked |= {(id(net), with_maps, shape) for shape in _read_checked(path.with_suffix(".checked.json"))}
                return self.core.read_model(str(path))
        example = torch.zeros((1,) + example_shape)
        dynamic = self._ov.PartialShape([-1, example_shape[0]] + [-1] * (len(example_shape) - 1))
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes; the traced graph is checked in forward()
            body = _Body(net, with_maps).eval()
            traced = torch.jit.trace(body, example, check_trace=False)
            model = self._ov.convert_model(traced, input=[dynamic])
        for port, name in zip(model.outputs, body.names):
            port.get_tensor().set_names({name})
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.stem + ".partial.xml")
            self._ov.save_model(model, str(partial), compress_to_fp16=False)
            partial.with_suffix(".bin").replace(path.with_suffix(".bin"))
            partial.replace(path)
        return model
