"""Segment one image with one model card: read, check, (crop to non-zero,) preprocess, predict, map back
(writing: result_folder).

Everything here is geometry-preserving: the label map and every evidence map are returned on the
input's own grid (size, spacing, origin, direction), whatever the model's spacing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from ..modelstore.cards import ModelCard
from .devices import describe_device, resolve_device
from ..choices import PRUNING_LEVELS
from ..errors import InputError, ModelError, OutOfMemory
from .imageio import read_image
from ..models import SegmentationNetwork
from .pipelines import pipeline_for
from .sizes import patch_size_zyx
from .postprocessing import class_index, keep_largest_component
from .nonzero_crop import crop_region, nonzero_region, paste_region
from .preprocessing import preprocess, resample_to_reference, same_grid
from .runcontext import CancelCheck, ProgressCallback, RunContext, channels_last_format, mixed_precision
from .sliding_window import choose_batch_size
from .window_plan import plan_window
from ..modelstore.store import ModelStore
from .tta import UNCERTAINTY_MAP, mirror_members, predict_mirrored
from .input_checks import empty_result_warnings, validate_volume
from .openvino_backend import OpenVINORunner, choose_backend, describe_backend

LEVELS = PRUNING_LEVELS
# On the CPU a card's (GPU-sized) batch is capped: larger batches spill the caches and run slower per
# window or slice (2 cores, docs/benchmarks.md: ANU-Net 256x256 slices 1.0 s each in batches of 8, 0.65 s alone).
CPU_MAX_BATCH = 2
# Pipelines whose window and slice shapes stay fixed through a run, so that ``compile`` compiles once.
COMPILABLE_MODES = ("sliding_window", "slicewise", "raunet_cascade")


@dataclass
class SegmentationResult:
    """Label map and evidence maps on the input grid, plus what happened on the way."""

    card: ModelCard
    label: sitk.Image
    maps: dict[str, sitk.Image]
    device: str
    level: str | None = None
    backend: str = ""  # what ran the networks: "openvino 2026.4.1", "pytorch 2.13.0"
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    input_path: str | None = None
    image: sitk.Image | None = None  # the input, for writers that show it (overlay.png)
    map_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # per map: the values' display range


def select_maps(card: ModelCard, maps: bool | Sequence[str]) -> list[dict[str, Any]]:
    """The card's map entries the user asked for (``True`` = all, ``False`` = none, or names)."""
    if maps is True:
        return card.maps
    if not maps:
        return []
    known = {m["name"]: m for m in card.maps}
    unknown = [name for name in maps if name not in known]
    if unknown:
        raise InputError(f"model {card.id} has no map(s) {unknown}; available: {sorted(known)}")
    return [known[name] for name in maps]


def prune_for_level(networks: dict[str, SegmentationNetwork], card: ModelCard, level: str | None) -> str | None:
    """ANU-Net: swap the main network for its pruned sub-network (same weights) at ``level``."""
    levels = card.inference.get("levels")
    if level is None:
        level = card.inference.get("default_level")
        if level is None:
            return None
    if not levels:
        raise InputError(f"model {card.id} cannot be pruned; --level applies to ANU-Net models")
    if level not in levels:
        raise InputError(f"pruning level {level!r} is not offered by {card.id}; choose one of {levels}")
    networks["main"] = networks["main"].pruned(LEVELS.index(level) + 1).eval()  # type: ignore[operator]
    return level


class Predictor:
    """Load once, predict many (as nnU-Net's predictor): a card's networks on one device, ready for images.

    Built from a card and either a model store (weights verified by SHA-256 and loaded) or networks
    already loaded (used in place: moved to the device, eval mode, channels-last where it is faster;
    the store is then not read). ANU-Net's pruning ``level`` is applied once here.

    ``tta``: test-time mirroring (:mod:`.tta`) over the card's ``inference.mirror_axes``; ``None``
    takes the card's ``inference.tta`` (off when absent). With it the ``uncertainty`` map exists.
    Without an explicit ``batch_size`` the windows per batch are chosen for the device: on CUDA so
    that peak GPU memory stays within ``memory_budget_gib``, on the CPU at most ``CPU_MAX_BATCH``.

    ``backend``: ``auto`` runs the forward passes on OpenVINO on the CPU when it is installed and a model
    store is given (:mod:`.openvino_backend`; converted models cached in the store's ``cache/openvino``;
    without a store there is nowhere to keep a conversion, which costs more than one small run gains),
    else PyTorch; ``pytorch`` or ``openvino`` choose. The result says which ran (``SegmentationResult.backend``).

    ``precision``: mixed precision on CUDA (:func:`.runcontext.mixed_precision`): ``auto`` (bf16 where the
    GPU has it, else fp16) or ``float32`` for a full-precision reference; the CPU always runs float32.

    ``compile``: on CUDA, compile the networks with ``torch.compile`` (inductor fuses the normalisation
    and activation passes that bound the 3D networks by memory traffic; measured on an H200: ConResNet
    windows 2.8x faster after a 35 s compilation, docs/benchmarks.md). The first image pays the
    compilation, so it suits a batch of images; every batch is then padded to one shape. Pipelines
    whose shapes change from round to round (RSTN) and other devices run uncompiled, with a warning.
    """

    def __init__(self, card: ModelCard, store: ModelStore | None = None, device: str = "auto",
                 networks: dict[str, SegmentationNetwork] | None = None, level: str | None = None,
                 batch_size: int | None = None, tta: bool | None = None, memory_budget_gib: float = 8.0,
                 backend: str = "auto", precision: str = "auto", compile: bool = False) -> None:
        self.card, self.batch_size, self.memory_budget_gib = card, batch_size, memory_budget_gib
        mixed_precision(torch.device("cpu"), precision)  # an unknown setting fails here, not mid-run
        self.precision = precision
        self.device = resolve_device(device)
        self.backend = choose_backend("pytorch" if backend == "auto" and store is None else backend, self.device)
        self._backend_warnings: list[str] = []
        self.runner = None
        if self.backend == "openvino":
            cache = store.root / "cache" / "openvino" if store is not None else None
            self.runner = OpenVINORunner(cache, warn=self._backend_warnings.append)
        t0 = time.perf_counter()
        if networks is None:
            if store is None:
                raise ModelError(f"model {card.id}: pass the model store or the loaded networks")
            networks = store.load_networks(card, self.device)
        else:
            networks = {role: net.to(self.device).eval() for role, net in networks.items()}
        self.level = prune_for_level(networks, card, level)
        layout = RunContext(device=self.device)
        networks = {role: net.to(memory_format=channels_last_format(net.spatial_dims)) if layout.use_channels_last(net.spatial_dims)
                    else net for role, net in networks.items()}
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed window shapes: let cuDNN pick the fastest kernels
        self.networks = networks
        self.compiled = compile and self._compile(networks)
        self.mirror_axes = _mirror_axes(card, tta)
        self.load_seconds = time.perf_counter() - t0

    def _compile(self, networks: dict[str, SegmentationNetwork]) -> bool:
        """``torch.compile`` every network in place (CUDA, fixed-shape pipelines); False with a warning otherwise."""
        mode = self.card.inference["mode"]
        if self.device.type != "cuda":
            self._backend_warnings.append(f"compile is used on CUDA GPUs only; ran uncompiled on {self.device}")
            return False
        if mode not in COMPILABLE_MODES:
            self._backend_warnings.append(f"compile is not used for {mode!r} (its shapes change from round to round); ran uncompiled")
            return False
        for net in networks.values():
            net.compile()
        return True

    def _context(self, progress: ProgressCallback | None, cancel: CancelCheck | None) -> RunContext:
        ctx = RunContext(device=self.device, precision=self.precision, progress=progress, cancel=cancel,
                         runner=self.runner, fixed_batch=self.compiled)  # runner: CPU only
        ctx.batch_size = int(self.batch_size or self.card.inference.get("batch_size", 4))
        if self.batch_size is None and ctx.device.type == "cpu":
            ctx.batch_size = min(ctx.batch_size, CPU_MAX_BATCH)
        return ctx

    def predict(self, image: sitk.Image | str | os.PathLike[str], maps: bool | Sequence[str] = True,
                progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> SegmentationResult:
        """Segment one image (a path is read first); the image passed in is not modified."""
        card, timings = self.card, {}
        ctx = self._context(progress, cancel)
        wanted_maps = select_maps(card, maps)
        t0 = time.perf_counter()
        ctx.report(0.0, "reading input")
        input_path = None
        if not isinstance(image, sitk.Image):
            input_path = str(Path(image).resolve())
            image = read_image(image)
        ctx.warnings.extend(validate_volume(image, card.input_channels, card.modality))
        timings["read"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        ctx.report(0.05, "preprocessing")
        region = nonzero_region(image) if card.inference.get("crop_to_nonzero") else None
        work = crop_region(image, region) if region else image  # zero-filled borders left out
        array, grid = preprocess(work, card.preprocessing)
        timings["preprocess"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        volume = torch.from_numpy(array)
        if self.batch_size is None and ctx.device.type == "cuda":
            with torch.compiler.set_stance("force_eager"):  # the one-window probe must not compile a second shape
                ctx.batch_size = _batch_for_memory(self.networks, card, volume, ctx, self.memory_budget_gib, bool(wanted_maps))
        prepared = self.runner.prepare_seconds if self.runner is not None else 0.0
        if self.runner is not None:
            self.runner.ran.clear()
        probabilities, raw_maps = _predict_with_fallback(volume, self.networks, card, ctx, bool(wanted_maps), self.mirror_axes)
        self.device = ctx.device  # after an out-of-memory fall back to the CPU, stay there
        timings["inference"] = time.perf_counter() - t0
        if self.runner is not None and self.runner.prepare_seconds > prepared:
            timings["openvino_prepare"] = self.runner.prepare_seconds - prepared  # included in "inference"
        ctx.warnings.extend(self._backend_warnings)
        self._backend_warnings.clear()
        if self.mirror_axes is not None:
            timings["tta_passes"] = float(len(mirror_members(self.mirror_axes)))

        t0 = time.perf_counter()
        ctx.report(0.9, "mapping results onto the input grid")
        label = _label_on_input_grid(probabilities, grid, work, card)
        out_maps = self._maps_on_input_grid(wanted_maps, raw_maps, grid, work, ctx, asked_by_name=maps is not True)
        map_ranges = {entry["name"]: map_value_range(entry, out_maps[entry["name"]]) for entry in wanted_maps if entry["name"] in out_maps}
        if region:  # the ranges above are of what the network computed, not of the fill outside the box
            label = paste_region(label, image, region)
            out_maps = {name: paste_region(values, image, region) for name, values in out_maps.items()}
        ctx.warnings.extend(empty_result_warnings(label, card.labels, card.modality))
        timings["postprocess"] = time.perf_counter() - t0
        ctx.report(1.0, "done")
        return SegmentationResult(card=card, label=label, maps=out_maps, device=describe_device(ctx.device),
                                  level=self.level, backend=self._backend_used(ctx), warnings=list(ctx.warnings), timings=timings,
                                  input_path=input_path, image=image, map_ranges=map_ranges)

    def _backend_used(self, ctx: RunContext) -> str:
        """What ran the networks: PyTorch, or OpenVINO with the networks that stayed on PyTorch named
        (RSTN's coarse pass and rounds, a network whose conversion failed)."""
        if ctx.runner is None or not ctx.runner.ran:
            return describe_backend("pytorch")
        on_pytorch = sorted(role for role, net in self.networks.items() if id(net) not in ctx.runner.ran)
        return describe_backend("openvino") + (f" ({', '.join(on_pytorch)} on PyTorch)" if on_pytorch else "")

    def _maps_on_input_grid(self, wanted: list[dict[str, Any]], raw_maps: dict[str, torch.Tensor], grid: sitk.Image,
                            image: sitk.Image, ctx: RunContext, asked_by_name: bool) -> dict[str, sitk.Image]:
        out: dict[str, sitk.Image] = {}
        for entry in wanted:
            source = entry.get("source", entry["name"])
            if source == UNCERTAINTY_MAP and source not in raw_maps:
                if asked_by_name:
                    ctx.warn("the uncertainty map comes from test-time mirroring, which is off (use --tta); skipped")
                continue
            if source not in raw_maps and self.level is not None:
                ctx.warn(f"map {entry['name']!r} does not exist in the network pruned to {self.level}; skipped")
                continue
            if source not in raw_maps:
                raise ModelError(f"model {self.card.id} declares map {entry['name']!r} but the network produced "
                                 f"{sorted(raw_maps)}")
            out[entry["name"]] = _map_on_input_grid(raw_maps[source].cpu().numpy(), grid, image, fixed_range(entry))
        return out


def segment(
    image: sitk.Image | str | os.PathLike[str],
    card: ModelCard,
    store: ModelStore | None,
    device: str = "auto",
    maps: bool | Sequence[str] = True,
    level: str | None = None,
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    networks: dict[str, SegmentationNetwork] | None = None,
    memory_budget_gib: float = 8.0,
    tta: bool | None = None,
    backend: str = "auto",
    compile: bool = False,
) -> SegmentationResult:
    """One image, one card: :class:`Predictor` built and used once (see there for the arguments).

    A path is read (and its file checked) before the model is loaded, so a damaged file fails fast.
    """
    input_path = None
    if not isinstance(image, sitk.Image):
        input_path = str(Path(image).resolve())
        image = read_image(image)
    predictor = Predictor(card, store, device, networks, level, batch_size, tta, memory_budget_gib, backend, compile=compile)
    result = predictor.predict(image, maps, progress, cancel)
    result.input_path = input_path
    result.timings["load"] = predictor.load_seconds
    return result


def _batch_for_memory(
    networks: dict[str, SegmentationNetwork], card: ModelCard, volume: torch.Tensor, ctx: RunContext, budget_gib: float, with_maps: bool
) -> int:
    """3D windows per batch from the memory budget (accumulators for probabilities and maps reserved)."""
    role = "main" if "main" in networks else "liver" if "liver" in networks else None
    if role is None or networks[role].spatial_dims != 3:
        return ctx.batch_size
    voxels = int(volume[0].numel())
    planes = networks[role].num_classes + 1 + (len(card.maps) if with_maps else 0) + volume.shape[0]
    window = patch_size_zyx(card.inference)
    if role == "main":  # the window the sliding-window pipeline will use on this volume
        window = plan_window(volume.shape[1:], window, card.inference, networks[role].divisors())
    return choose_batch_size(networks[role], window, volume.shape[0], ctx, budget_gib, planes * voxels * 4)


def _mirror_axes(card: ModelCard, tta: bool | None) -> list[int] | None:
    """The spatial axes to mirror (test-time augmentation), or None when it is off."""
    if not (card.inference.get("tta", False) if tta is None else tta):
        return None
    return [int(a) for a in card.inference.get("mirror_axes", [0, 1, 2])]


def _predict_with_fallback(
    volume: torch.Tensor,
    networks: dict[str, SegmentationNetwork],
    card: ModelCard,
    ctx: RunContext,
    with_maps: bool,
    mirror_axes: Sequence[int] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run the card's pipeline (mirrored when ``mirror_axes``); on GPU out-of-memory halve the window
    batch, then fall back to CPU."""
    pipeline = pipeline_for(card.inference["mode"])
    while True:
        try:
            if mirror_axes is not None:
                return predict_mirrored(pipeline, volume, networks, card.inference, ctx.span(0.1, 0.88), with_maps, mirror_axes)
            return pipeline(volume, networks, card.inference, ctx.span(0.1, 0.88), with_maps)
        except torch.OutOfMemoryError:
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
            if ctx.batch_size > 1:
                ctx.batch_size //= 2
                ctx.warn(f"out of memory on {ctx.device}; retrying with {ctx.batch_size} window(s) per batch")
            elif ctx.device.type != "cpu":
                ctx.warn(f"out of memory on {ctx.device} even with one window per batch; falling back to the CPU")
                ctx.device = torch.device("cpu")
                for role, net in networks.items():
                    networks[role] = net.to(ctx.device)
            else:
                raise OutOfMemory("out of memory on the CPU; free memory or use a smaller input") from None


def _label_on_input_grid(probabilities: torch.Tensor | np.ndarray, grid: sitk.Image, reference: sitk.Image,
                         card: ModelCard) -> sitk.Image:
    """The label map on the input grid: the argmax of the (K, z, y, x) probabilities resampled linearly
    onto it, as the card's label values; each label's largest component when the card asks.

    Same decision, less work: on an unchanged grid the argmax is taken where the probabilities are (on
    the GPU only the classes travel back); with two classes only the difference foreground - background
    is resampled (interpolation is linear, so its sign is the argmax of both resampled channels).
    """
    values = np.array([0] + [label["value"] for label in card.labels])
    probabilities = torch.as_tensor(probabilities)
    if len(values) != probabilities.shape[0]:
        raise ModelError(
            f"model {card.id} lists {len(values) - 1} label(s) but the network predicts {probabilities.shape[0] - 1}"
        )
    if same_grid(grid, reference):
        classes = class_index(probabilities).cpu().numpy()
    elif len(values) == 2:
        margin = (probabilities[1].float() - probabilities[0].float()).cpu().numpy()
        classes = (resample_to_reference(margin, grid, reference) > 0).astype(np.uint8)
    else:
        on_input = resample_to_reference(probabilities.float().cpu().numpy(), grid, reference)
        classes = class_index(torch.from_numpy(on_input)).numpy()
    dtype = np.uint8 if values.max() < 256 else np.uint16
    label_array = classes if np.array_equal(values, np.arange(len(values))) else values.astype(dtype)[classes]
    if card.inference.get("largest_component"):
        label_array = keep_largest_component(label_array)
    label = sitk.GetImageFromArray(label_array.astype(dtype, copy=False))
    label.CopyInformation(reference)
    return label


def _map_on_input_grid(values: np.ndarray, grid: sitk.Image, reference: sitk.Image,
                       clip: tuple[float, float] | None = (0.0, 1.0)) -> sitk.Image:
    """A (C, z, y, x) map: one channel is written as a scalar volume, several as their maximum; values
    clipped to ``clip`` (a map whose card fixes its range), kept as they are with ``None``."""
    single = values.max(axis=0) if values.ndim == 4 else values
    on_input = resample_to_reference(single.astype(np.float32), grid, reference)
    if clip is not None:
        on_input = np.clip(on_input, *clip)
    image = sitk.GetImageFromArray(on_input.astype(np.float32))
    image.CopyInformation(reference)
    return image


def fixed_range(entry: Mapping[str, Any]) -> tuple[float, float] | None:
    """A card map's fixed value range (``range: [lo, hi]``, default [0, 1]); None for ``range: "data"``
    (raw values, such as RSTN's saliency weights, shown over their own range)."""
    value = entry.get("range", [0.0, 1.0])
    return None if value == "data" else (float(value[0]), float(value[1]))


def map_value_range(entry: Mapping[str, Any], image: sitk.Image) -> tuple[float, float]:
    """The range a map's colours span: the card's fixed range, or the map's own minimum and maximum."""
    fixed = fixed_range(entry)
    if fixed is not None:
        return fixed
    values = sitk.GetArrayViewFromImage(image)
    lo, hi = float(values.min()), float(values.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
