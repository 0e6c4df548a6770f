"""Optimisers and learning-rate schedules of the papers, built from a recipe's ``optimizer`` / ``scheduler``.

* ``sgd`` (``momentum``, ``nesterov``, ``weight_decay``) and ``adam`` / ``adamw``.
* Schedules, stepped once per training step (:func:`step_scheduler`):
  ``constant``; ``poly``: lr (1 - t / T)^power (ConResNet Sec. IV-B, Eq. 10, power 0.9);
  ``inverse_time``: lr / (1 + decay t), Keras' ``decay`` argument (SIP-Net Sec. 4.1);
  ``multistep``: lr x ``gamma`` at each of ``milestones`` (RSTN: 1e-4, then 1e-6 for the fine-tuning
  on coarse-prediction crops, "Experiments");
  ``plateau``: lr x ``factor`` when the epoch's mean training loss has not improved for ``patience``
  epochs of ``steps_per_epoch`` steps (RA-UNet Sec. III-I: x0.1 after a 20-epoch plateau; Keras'
  ``ReduceLROnPlateau``).
All state dicts hold numbers only (weights-only loadable checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch

__all__ = ["EpochPlateau", "build_optimizer", "build_scheduler", "step_scheduler"]


def build_optimizer(cfg: Mapping[str, Any], params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    name = str(cfg.get("name", "adam")).lower()
    lr, wd = float(cfg.get("lr", 1e-3)), float(cfg.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False)), weight_decay=wd)
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.999)))
        return cls(params, lr=lr, betas=betas, eps=float(cfg.get("eps", 1e-8)), weight_decay=wd)  # type: ignore[arg-type]
    raise ValueError(f"unknown optimizer {name!r}; use sgd, adam or adamw")


@dataclass
class _Poly:
    total: int
    power: float

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - min(step, self.total) / max(self.total, 1)) ** self.power


@dataclass
class _InverseTime:
    decay: float

    def __call__(self, step: int) -> float:
        return 1.0 / (1.0 + self.decay * step)


class EpochPlateau:
    """``ReduceLROnPlateau`` on the mean training loss of each epoch of ``steps_per_epoch`` steps.

    :meth:`step` takes the step's loss; at the end of an epoch the mean (across processes with
    ``reduce``, so every DDP rank takes the same decision) goes to the plateau rule. The partial
    epoch's sum is part of the state, so a resumed run decides exactly as an uninterrupted one.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, factor: float = 0.1,
                 patience: int = 20, threshold: float = 1e-4, min_lr: float = 0.0,
                 reduce: Callable[[float], float] | None = None) -> None:
        self.optimizer, self.steps_per_epoch = optimizer, max(1, int(steps_per_epoch))
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=factor, patience=patience, threshold=threshold, min_lr=min_lr
        )
        self.reduce = reduce
        self.last_epoch, self.loss_sum, self.loss_count = 0, 0.0, 0

    def step(self, loss: float) -> None:
        self.last_epoch += 1
        self.loss_sum, self.loss_count = self.loss_sum + float(loss), self.loss_count + 1
        if self.last_epoch % self.steps_per_epoch == 0:
            mean = self.loss_sum / self.loss_count
            self.plateau.step(self.reduce(mean) if self.reduce is not None else mean)
            self.loss_sum, self.loss_count = 0.0, 0

    def get_last_lr(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"plateau": self.plateau.state_dict(), "last_epoch": self.last_epoch,
                "loss_sum": self.loss_sum, "loss_count": self.loss_count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.plateau.load_state_dict(dict(state["plateau"]))
        self.last_epoch, self.loss_sum, self.loss_count = int(state["last_epoch"]), float(state["loss_sum"]), int(state["loss_count"])


Scheduler = torch.optim.lr_scheduler.LRScheduler | EpochPlateau


def step_scheduler(scheduler: Scheduler, loss: float) -> None:
    """Advance the schedule by one training step (the plateau rule also needs the step's loss)."""
    if isinstance(scheduler, EpochPlateau):
        scheduler.step(loss)
    else:
        scheduler.step()


def build_scheduler(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, max_steps: int,
                    steps_per_epoch: int = 250, reduce: Callable[[float], float] | None = None) -> Scheduler:
    """The schedule named in ``cfg``; ``total_steps`` (poly) defaults to the run's ``max_steps``,
    ``steps_per_epoch`` (plateau) to the run's; ``reduce`` averages a value over DDP processes."""
    name = str(cfg.get("name", "constant")).lower()
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if name == "poly":
        total = int(cfg.get("total_steps") or max_steps)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _Poly(total, float(cfg.get("power", 0.9))))
    if name == "inverse_time":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _InverseTime(float(cfg.get("decay", 1e-6))))
    if name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(m) for m in cfg["milestones"]], float(cfg.get("gamma", 0.1)))
    if name == "plateau":
        return EpochPlateau(optimizer, int(cfg.get("steps_per_epoch") or steps_per_epoch), float(cfg.get("factor", 0.1)),
                            int(cfg.get("patience", 20)), float(cfg.get("threshold", 1e-4)), float(cfg.get("min_lr", 0.0)), reduce)
    raise ValueError(f"unknown scheduler {name!r}; use constant, poly, inverse_time, multistep or plateau")
