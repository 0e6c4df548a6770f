"""The fit loop: one network (one role of a card) trained by step, the way its recipe says.

Per step: this rank's share of the global batch (:class:`training.sampling.StepBatches`), forward
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
from MedSegAttentionLib.inference.preprocessing import PreprocessingSpec
from MedSegAttentionLib.inference.runcontext import channels_last_faster, channels_last_format, mixed_precision

from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .raw_dataset import load_dataset
from .preprocessed import Volume, load_volumes
from .sampling import PatchSampler, StepBatches, sample_seed
from .distributed import all_gather_objects, all_reduce_mean, barrier, init_distributed
from .losses import build_loss
from .recipes import Recipe
from .schedules import build_optimizer, build_scheduler, step_scheduler
from .splits import fold_cases, load_or_create_splits
from .validation import mean_dice, summary_means, validate

__all__ = ["FitResult", "Trainer", "fit", "initialise_from"]

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


class Trainer:
    """One role of a recipe trained on one fold: setup, resume, step, validate, checkpoint (see the module docstring).

    ``time_limit_s``: stop (with ``last.pt``) at the first step after this many seconds of training,
    like ``train.stop_after`` but by the clock, so runs fit a machine lent for a few minutes at a time;
    ``resume`` continues exactly there.
    """

    def __init__(self, recipe: Recipe, data: str | Path, fold: int | str, out: str | Path, device: str = "auto",
                 progress: bool = True, time_limit_s: float | None = None) -> None:
        self.recipe = recipe if recipe.staged else recipe.for_stage(None)
        self.cfg = self.recipe["train"]
        self.fold, self.progress, self.time_limit_s = fold, progress, time_limit_s
        self.dev = resolve_device(device)
        self.info = init_distributed(self.dev.type)
        if self.dev.type == "cuda":
            self.dev = torch.device("cuda", self.info.local_rank if self.info.enabled else (self.dev.index or 0))
        self.role = self.recipe["role"]
        self.run_dir = Path(out) / _fold_name(fold) / self.role
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.last_path, self.best_path = self.run_dir / "last.pt", self.run_dir / "best.pt"
        self._setup_data(Path(out), data)
        self._setup_model()
        self.step, self.best, self.last_loss = 0, -math.inf, math.nan

    # ------------------------------------------------------------------ setup
    def _setup_data(self, out: Path, data: str | Path) -> None:
        """Splits and cache are written by rank 0 only; fold "all" trains on every case, no split."""
        recipe, info = self.recipe, self.info
        dataset = load_dataset(data)
        folds, seed = int(recipe["data"]["folds"]), int(recipe["data"]["split_seed"])
        splits: list[dict[str, list[str]]] = []
        if self.fold != "all" and info.is_main:
            splits = load_or_create_splits(out, dataset.case_ids, folds, seed)
        barrier(info)
        if self.fold != "all" and not info.is_main:
            splits = load_or_create_splits(out, dataset.case_ids, folds, seed)
        train_cases, val_cases = fold_cases(dataset, splits, self.fold)
        max_val = recipe["validation"].get("max_cases")
        self.val_cases = val_cases[: int(max_val)] if max_val else val_cases
        spec = PreprocessingSpec.from_card(recipe.card["preprocessing"])
        cache = out / "cache" if recipe["data"].get("cache", True) else None
        if info.is_main:
            volumes = load_volumes(train_cases + self.val_cases, spec, cache, write=True)
        barrier(info)
        if not info.is_main:
            volumes = load_volumes(train_cases + self.val_cases, spec, cache, write=False)
        self.train_vols, self.val_vols = volumes[: len(train_cases)], volumes[len(train_cases):]
        _check_input_channels(volumes, recipe, int(recipe.network_config().get("in_channels", 1)))

    def _setup_model(self) -> None:
        """Network (channels-last where it is faster, as in inference), loss, optimiser, schedule, AMP."""
        recipe, cfg, info = self.recipe, self.cfg, self.info
        self.seed = int(cfg["seed"])
        torch.manual_seed(self.seed)
        net = build_network(recipe.network_config()).to(self.dev)
        fast = channels_last_faster(self.dev, net.spatial_dims)
        self.layout = channels_last_format(net.spatial_dims) if fast else torch.contiguous_format
        self.net = net.to(memory_format=self.layout)
        if cfg.get("init_from"):
            initialise_from(self.net, cfg["init_from"], self.role)
            if info.is_main:
                print(f"initialised {self.role} from {cfg['init_from']}", file=sys.stderr)
        loss_cfg = dict(recipe["loss"])
        self.criterion = build_loss(str(loss_cfg.pop("name")), **loss_cfg)
        self.max_steps = int(cfg["max_steps"])
        self.optimizer = build_optimizer(recipe["optimizer"], self.net.parameters())
        self.steps_per_epoch = max(1, int(cfg.get("steps_per_epoch", 250)))
        self.scheduler = build_scheduler(recipe["scheduler"], self.optimizer, self.max_steps, self.steps_per_epoch,
                                         reduce=lambda value: all_reduce_mean(value, info))
        self.use_amp, self.amp_dtype = _amp(cfg.get("amp"), self.dev)
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.model: torch.nn.Module = self.net
        if info.enabled:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.dev.index] if self.dev.type == "cuda" else None,
                find_unused_parameters=bool(cfg.get("find_unused_parameters", False)),
            )

    # ------------------------------------------------------------------ state
    def resume(self) -> None:
        """Continue from ``last.pt`` (weights, optimiser, schedule, scaler, random state, step)."""
        if not self.last_path.is_file():
            if self.info.is_main:
                print(f"nothing to resume for {self.role}: {self.last_path} does not exist; starting at step 0", file=sys.stderr)
            return
        state = load_checkpoint(self.last_path, map_location=self.dev)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        self.step, self.best = int(state["step"]), float(state["best_dice"])
        if self.info.is_main:
            print(f"resuming {self.role} from step {self.step} ({self.last_path})", file=sys.stderr)

    def checkpoint(self, path: Path) -> None:
        save_checkpoint(path, {
            "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": capture_rng(),
            "step": self.step, "epoch": self.step // self.steps_per_epoch, "best_dice": self.best,
            "config": self.net.config, "recipe": self.recipe.name, "role": self.role,
        })

    def _save_best(self, dice: float, means: dict[str, Any]) -> None:
        save_checkpoint(self.best_path, {"model": self.net.state_dict(), "config": self.net.config, "step": self.step,
                                         "mean_dice": dice, "metrics": means, "n_cases": len(self.val_vols)})

    # ------------------------------------------------------------------ work
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimiser step on a batch; the network's own training hook supplies extra inputs (RSTN's crop)."""
        info = self.info
        torch.manual_seed(sample_seed(self.seed, self.step, 1_000_000 + info.rank))
        x = x.to(self.dev, non_blocking=True).contiguous(memory_format=self.layout)
        y = y.to(self.dev, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        switch = self.recipe["rstn"].get("ground_truth_crop_steps")
        extra = self.net.training_inputs(x, y, from_prediction=switch is not None and self.step >= int(switch))
        with torch.autocast(device_type=self.dev.type, dtype=self.amp_dtype, enabled=self.use_amp):
            output = self.model(x, **extra)
        loss = self.criterion(_to_float(output), y)
        self.scaler.scale(loss).backward()
        if self.cfg.get("grad_clip"):
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(self.cfg["grad_clip"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.last_loss = float(loss.detach())
        step_scheduler(self.scheduler, self.last_loss)
        self.step += 1
        return self.last_loss

    def validate(self) -> float | None:
        """Whole validation volumes through the engine's inference; keeps the best checkpoint."""
        info = self.info
        rows = validate(self.net, self.val_vols[info.rank :: info.world_size], self.recipe.data, self.recipe.card,
                        self.dev, self.recipe.num_classes)
        rows = [r for part in all_gather_objects(rows, info) for r in part]
        if not info.is_main:
            return None
        dice, means = mean_dice(rows), summary_means(rows)
        self.logger.log(self.step, {f"val/{k}": v for k, v in means.items() if v is not None})
        if dice > self.best:
            self.best = dice
            self._save_best(dice, means)
        return dice

    def run(self) -> FitResult:
        """Train to ``max_steps`` (or ``stop_after``, or the time limit) and return what happened."""
        cfg, info = self.cfg, self.info
        stop = min(self.max_steps, int(cfg["stop_after"])) if cfg.get("stop_after") else self.max_steps
        sampler = PatchSampler(self.train_vols, self.recipe.data, label_slices=int(getattr(self.net, "output_slices", 1)))
        batches = StepBatches(sampler, self.seed,
                              int(self.recipe["sampling"]["batch_size"]), info.rank, info.world_size)
        loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(self.step, stop),
                                             num_workers=int(cfg.get("num_workers", 0)),
                                             pin_memory=self.dev.type == "cuda", persistent_workers=False)
        self.logger = _Logger(self.run_dir, info.is_main)
        val_every, ckpt_every, log_every = int(cfg["val_every"]), int(cfg["checkpoint_every"]), int(cfg.get("log_every", 10))
        bar = tqdm(total=stop, initial=self.step, desc=f"{self.recipe.name}:{self.role}",
                   disable=not (self.progress and info.is_main), dynamic_ncols=True, file=sys.stderr)
        self.net.train()
        t0 = time.perf_counter()
        for x, y in loader:
            loss = self.train_step(x, y)
            lr = self.scheduler.get_last_lr()[0]
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            if self.step % log_every == 0 or self.step == stop:
                self.logger.log(self.step, {"train/loss": loss, "train/lr": lr, "epoch": self.step // self.steps_per_epoch,
                                            "time_s": time.perf_counter() - t0})
            if self.val_vols and (self.step % val_every == 0 or self.step == self.max_steps):
                dice = self.validate()
                if dice is not None:
                    bar.write(f"[{self.role}] step {self.step}: validation Dice {dice:.4f} (best {self.best:.4f})")
            out_of_time = (self.time_limit_s is not None
                           and all_reduce_mean(float(time.perf_counter() - t0 > self.time_limit_s), info) > 0)
            if info.is_main and (self.step % ckpt_every == 0 or self.step == stop or out_of_time):
                self.checkpoint(self.last_path)
            barrier(info)
            if out_of_time and self.step < stop:
                bar.write(f"[{self.role}] time limit of {self.time_limit_s:.0f} s reached at step {self.step}; resume with --resume")
                break
        bar.close()
        if self.step >= self.max_steps and info.is_main and not self.val_vols:  # fold "all": the last weights are the result
            self._save_best(math.nan, {})
        self.logger.close()
        barrier(info)
        return FitResult(self.role, self.run_dir, self.step, self.best, self.last_loss, [c.case_id for c in self.val_cases])


def fit(recipe: Recipe, data: str | Path, fold: int | str, out: str | Path, device: str = "auto",
        resume: bool = False, progress: bool = True, time_limit_s: float | None = None) -> FitResult:
    """Train ``recipe``'s role on fold ``fold`` of the data set at ``data`` (a :class:`Trainer` run)."""
    trainer = Trainer(recipe, data, fold, out, device, progress, time_limit_s)
    if resume:
        trainer.resume()
    return trainer.run()
