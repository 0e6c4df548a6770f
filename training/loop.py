"""The fit loop: one network (one role of a card) trained by step, the way its recipe says.

Per step: this rank's share of the global batch (:class:`training.datasets.StepBatches`), forward
under autocast on CUDA (bf16, or fp16 with a ``GradScaler``), the paper's loss in float32, backward,
gradient clipping, optimiser and scheduler step. Torch's generator is re-seeded from (seed, step,
rank) every step, so dropout and RSTN's margin jitter, like the data, depend only on the step:
resuming from ``last.pt`` continues exactly where the interrupted run was.

Every ``val_every`` steps (and at the end) the whole validation volumes are predicted with the
engine's inference and scored (:mod:`training.validation`); the best mean Dice is kept in
``best.pt``. Folder of a run: ``<out>/fold_<k>/<role>/`` with ``last.pt``, ``best.pt``,
``metrics.jsonl`` and TensorBoard logs in ``tb/`` when ``tensorboard`` is installed.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from MedSegAttentionLib.inference.devices import resolve_device
from MedSegAttentionLib.models import SegmentationOutput, build_network
from MedSegAttentionLib.models.rstn import foreground_probability
from MedSegAttentionLib.inference.preprocessing import PreprocessingSpec
from MedSegAttentionLib.inference.runcontext import channels_last_device, channels_last_format, mixed_precision

from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .data import load_dataset
from .datasets import PatchSampler, StepBatches, Volume, load_volumes, sample_seed
from .distributed import all_gather_objects, all_reduce_mean, barrier, init_distributed
from .losses import build_loss
from .recipes import Recipe
from .schedules import build_optimizer, build_scheduler, step_scheduler
from .splits import fold_cases, load_or_create_splits
from .validation import mean_dice, summary_means, validate

__all__ = ["FitResult", "fit", "rstn_crop_mask"]

TENSORBOARD_MISSING = (
    "note: TensorBoard logs are off because the 'tensorboard' package is not installed "
    "(pip install 'medsegattention[train]'); metrics are still written to {path}"
)


@dataclass
class FitResult:
    role: str
    run_dir: Path
    step: int
    best_dice: float
    last_loss: float
    val_cases: list[str]


def _fold_name(fold: int | str) -> str:
    return f"fold_{fold}"


def _to_float(out: SegmentationOutput) -> SegmentationOutput:
    return SegmentationOutput(
        logits=out.logits.float(),
        deep_supervision=tuple(t.float() for t in out.deep_supervision),
        aux={k: v.float() for k, v in out.aux.items()},
    )


def rstn_crop_mask(net: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, from_prediction: bool) -> torch.Tensor:
    """Where RSTN's fine stage is cropped in training (Yu et al., "Training and Testing").

    The ground-truth foreground first; with ``from_prediction`` (the fine-tuning on coarse-scaled
    crops, "Experiments") the coarse network's own prediction (foreground probability >= the
    network's threshold), with the ground truth where that prediction is empty (authors' stage J).
    """
    truth = (labels > 0).to(x.dtype)
    if not from_prediction:
        return truth
    with torch.no_grad():
        height, width = x.shape[-2:]
        coarse = net.coarse(net.pad_to_divisor(x))[..., :height, :width]  # type: ignore[operator]
        predicted = (foreground_probability(coarse.float())[:, 0] >= net.threshold).to(x.dtype)
        empty = predicted.flatten(1).sum(1) == 0
        return torch.where(empty[:, None, None], truth, predicted)


def _forward(model: torch.nn.Module, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, step: int) -> SegmentationOutput:
    """Network forward; RSTN gets its crop mask (:func:`rstn_crop_mask`): the ground truth for the
    first ``rstn.ground_truth_crop_steps`` steps, then the coarse prediction."""
    if getattr(net, "name", "") != "rstn":
        return model(x)
    switch = recipe["rstn"].get("ground_truth_crop_steps")
    return model(x, crop_mask=rstn_crop_mask(net, x, y, switch is not None and step >= int(switch)))


class _Logger:
    """metrics.jsonl always; TensorBoard only when the ``tensorboard`` package is importable."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled, self.writer = enabled, None
        if not enabled:
            return
        self.file = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
        except ImportError:
            print(TENSORBOARD_MISSING.format(path=run_dir / "metrics.jsonl"), file=sys.stderr)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not math.isnan(float(value)):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


def _amp(setting: str | None, device: torch.device) -> tuple[bool, torch.dtype]:
    """(autocast on?, its dtype) for ``train.amp``: the engine's policy
    (:func:`MedSegAttentionLib.inference.runcontext.mixed_precision`), with a note when bf16 falls back."""
    if setting not in (None, False, "none", "float32", "bf16", "fp16"):
        raise ValueError(f"train.amp must be none, bf16 or fp16, got {setting!r}")
    enabled, dtype = mixed_precision(device, setting)
    if enabled and setting == "bf16" and dtype == torch.float16:
        print("note: this GPU has no bfloat16; mixed precision uses float16 with loss scaling", file=sys.stderr)
    return enabled, dtype


def initialise_from(net: torch.nn.Module, path: str | Path, role: str) -> None:
    """Warm start: load ``role``'s weights from an exported safetensors file (shapes must match).

    safetensors holds tensors only (nothing is unpickled); float16 exports are cast to the network's dtype.
    """
    flat = load_file(str(path))
    prefix = f"{role}."
    state = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"{path}: no weights for role {role!r} (roles: {sorted({k.split('.')[0] for k in flat})})")
    own = net.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    net.load_state_dict(state, strict=True)


def _check_input_channels(volumes: list[Volume], recipe: Recipe, in_channels: int) -> None:
    """The network's input channels must be the data's channels times the stacked slices."""
    if not volumes:
        return
    context = int(recipe["sampling"].get("slice_context") or 0) if recipe["sampling"]["mode"] == "slice" else 0
    given = volumes[0].image.shape[0] * (2 * context + 1)
    if given != in_channels:
        detail = f" x {2 * context + 1} stacked slices" if context else ""
        raise ValueError(
            f"recipe {recipe.name} [{recipe['role']}]: the network takes {in_channels} input channel(s) but the data "
            f"gives {volumes[0].image.shape[0]} channel(s){detail} = {given}"
        )


def fit(recipe: Recipe, data: str | Path, fold: int | str, out: str | Path, device: str = "auto",
        resume: bool = False, progress: bool = True, time_limit_s: float | None = None) -> FitResult:
    """Train ``recipe``'s role on fold ``fold`` of the data set at ``data``; see the module docstring.

    ``time_limit_s``: stop (with ``last.pt``) at the first step after this many seconds of training,
    like ``train.stop_after`` but by the clock, so runs fit a machine lent for a few minutes at a time;
    ``resume`` continues exactly there."""
    if not recipe.staged:
        recipe = recipe.for_stage(None)
    train_cfg = recipe["train"]
    dev = resolve_device(device)
    info = init_distributed(dev.type)
    if dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank if info.enabled else (dev.index or 0))
    out = Path(out)
    role = recipe["role"]
    run_dir = out / _fold_name(fold) / role
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    # data: splits and cache are written by rank 0 only; fold "all" trains on every case, no split
    dataset = load_dataset(data)
    splits: list[dict[str, list[str]]] = []
    if fold != "all" and info.is_main:
        splits = load_or_create_splits(out, dataset.case_ids, int(recipe["data"]["folds"]), int(recipe["data"]["split_seed"]))
    barrier(info)
    if fold != "all" and not info.is_main:
        splits = load_or_create_splits(out, dataset.case_ids, int(recipe["data"]["folds"]), int(recipe["data"]["split_seed"]))
    train_cases, val_cases = fold_cases(dataset, splits, fold)
    max_val = recipe["validation"].get("max_cases")
    val_cases = val_cases[: int(max_val)] if max_val else val_cases
    spec = PreprocessingSpec.from_card(recipe.card["preprocessing"])
    cache = out / "cache" if recipe["data"].get("cache", True) else None
    if info.is_main:
        volumes = load_volumes(train_cases + val_cases, spec, cache, write=True)
    barrier(info)
    if not info.is_main:
        volumes = load_volumes(train_cases + val_cases, spec, cache, write=False)
    train_vols, val_vols = volumes[: len(train_cases)], volumes[len(train_cases):]
    _check_input_channels(volumes, recipe, int(recipe.network_config().get("in_channels", 1)))

    # model, loss, optimiser, schedule
    seed = int(train_cfg["seed"])
    torch.manual_seed(seed)
    config = recipe.network_config()
    net = build_network(config).to(dev)
    # channels-last (NDHWC / NHWC): the fast layout for cuDNN and oneDNN, as in inference (runcontext)
    layout = channels_last_format(net.spatial_dims) if channels_last_device(dev) else torch.contiguous_format
    net = net.to(memory_format=layout)
    loss_cfg = dict(recipe["loss"])
    criterion = build_loss(str(loss_cfg.pop("name")), **loss_cfg)
    max_steps = int(train_cfg["max_steps"])
    optimizer = build_optimizer(recipe["optimizer"], net.parameters())
    steps_per_epoch = max(1, int(train_cfg.get("steps_per_epoch", 250)))
    scheduler = build_scheduler(recipe["scheduler"], optimizer, max_steps, steps_per_epoch,
                                reduce=lambda value: all_reduce_mean(value, info))
    use_amp, amp_dtype = _amp(train_cfg.get("amp"), dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp and amp_dtype == torch.float16)
    step, best, last_loss = 0, -math.inf, math.nan
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if train_cfg.get("init_from") and not (resume and last_path.is_file()):
        initialise_from(net, train_cfg["init_from"], role)
        if info.is_main:
            print(f"initialised {role} from {train_cfg['init_from']}", file=sys.stderr)
    if resume and last_path.is_file():
        state = load_checkpoint(last_path, map_location=dev)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        step, best = int(state["step"]), float(state["best_dice"])
        if info.is_main:
            print(f"resuming {role} from step {step} ({last_path})", file=sys.stderr)
    elif resume and info.is_main:
        print(f"nothing to resume for {role}: {last_path} does not exist; starting at step 0", file=sys.stderr)
    model: torch.nn.Module = net
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=bool(train_cfg.get("find_unused_parameters", False)),
        )

    sampling = recipe["sampling"]
    batches = StepBatches(PatchSampler(train_vols, recipe.data), seed, int(sampling["batch_size"]), info.rank, info.world_size)
    stop = min(max_steps, int(train_cfg["stop_after"])) if train_cfg.get("stop_after") else max_steps
    workers = int(train_cfg.get("num_workers", 0))
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(step, stop), num_workers=workers,
        pin_memory=dev.type == "cuda", persistent_workers=False,
    )
    logger = _Logger(run_dir, info.is_main)
    val_every, ckpt_every = int(train_cfg["val_every"]), int(train_cfg["checkpoint_every"])
    log_every, clip = int(train_cfg.get("log_every", 10)), train_cfg.get("grad_clip")

    def checkpoint(path: Path) -> None:
        save_checkpoint(path, {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": capture_rng(), "step": step, "epoch": step // steps_per_epoch,
            "best_dice": best, "config": net.config, "recipe": recipe.name, "role": role,
        })

    def run_validation() -> None:
        nonlocal best
        rows = validate(net, val_vols[info.rank :: info.world_size], recipe.data, recipe.card, dev, recipe.num_classes)
        rows = [r for part in all_gather_objects(rows, info) for r in part]
        if not info.is_main:
            return
        dice, means = mean_dice(rows), summary_means(rows)
        logger.log(step, {f"val/{k}": v for k, v in means.items() if v is not None})
        if dice > best:
            best = dice
            save_checkpoint(best_path, {"model": net.state_dict(), "config": net.config, "step": step,
                                        "mean_dice": dice, "metrics": means, "n_cases": len(val_vols)})
        bar.write(f"[{role}] step {step}: validation Dice {dice:.4f} (best {best:.4f})")

    bar = tqdm(total=stop, initial=step, desc=f"{recipe.name}:{role}", disable=not (progress and info.is_main),
               dynamic_ncols=True, file=sys.stderr)
    net.train()
    t0 = time.perf_counter()
    for x, y in loader:
        torch.manual_seed(sample_seed(seed, step, 1_000_000 + info.rank))
        x, y = x.to(dev, non_blocking=True).contiguous(memory_format=layout), y.to(dev, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=use_amp):
            output = _forward(model, net, x, y, recipe, step)
        loss = criterion(_to_float(output), y)
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(net.parameters(), float(clip))
        scaler.step(optimizer)
        scaler.update()
        last_loss = float(loss.detach())
        step_scheduler(scheduler, last_loss)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if step % log_every == 0 or step == stop:
            logger.log(step, {"train/loss": last_loss, "train/lr": scheduler.get_last_lr()[0],
                              "epoch": step // steps_per_epoch, "time_s": time.perf_counter() - t0})
        if val_vols and (step % val_every == 0 or step == max_steps):
            run_validation()
        out_of_time = time_limit_s is not None and all_reduce_mean(float(time.perf_counter() - t0 > time_limit_s), info) > 0
        if info.is_main and (step % ckpt_every == 0 or step == stop or out_of_time):
            checkpoint(last_path)
        barrier(info)
        if out_of_time and step < stop:
            bar.write(f"[{role}] time limit of {time_limit_s:.0f} s reached at step {step}; resume with --resume")
            break
    bar.close()
    if step >= max_steps and info.is_main and not val_vols:  # fold "all": the last weights are the result
        save_checkpoint(best_path, {"model": net.state_dict(), "config": net.config, "step": step,
                                    "mean_dice": math.nan, "metrics": {}, "n_cases": 0})
    logger.close()
    barrier(info)
    return FitResult(role, run_dir, step, best, last_loss, [c.case_id for c in val_cases])
