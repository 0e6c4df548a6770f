"""The one contract every MedSegAttention network follows.

* ``forward(x, return_maps=False)`` returns a :class:`SegmentationOutput`:
  ``logits`` (B, num_classes, *spatial) with background as class 0 (softmax over classes);
  ``deep_supervision``, a tuple of extra logits of the same shape, only in training mode;
  ``maps``, the named interpretable maps the paper visualises, only when ``return_maps`` is true;
  ``aux``, named auxiliary training outputs whose target is not the segmentation itself (e.g.
  ConResNet's context-residual logits), only in training mode.
* Input size rule: a spatial size that the network's down-sampling does not divide is padded
  (replicate padding at the high end of each axis) to the next multiple of ``size_divisor`` (and to
  at least ``min_divisor_multiple`` multiples) and every output is cropped back, so outputs always
  have the input's spatial shape.
* Maps are brought to the input resolution (linear interpolation) and lie in [0, 1]; each has shape
  (B, C_map, *spatial). Collecting them only keeps references to tensors the forward pass computes
  anyway, so asking for maps does not slow the normal path.
* Hyper-parameters are captured automatically from the subclass ``__init__`` call; ``config`` returns
  them as a plain dict (with ``name``) that :func:`MedSegAttentionLib.models.build_network` accepts.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SegmentationOutput:
    """What a network returns: logits; deep supervision and aux (training); named maps (on request)."""

    logits: torch.Tensor
    deep_supervision: tuple[torch.Tensor, ...] = ()
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


class SegmentationNetwork(nn.Module):
    """Base class of the five networks: input checks, the padding rule, config capture.

    Subclasses set ``name``, ``spatial_dims`` and ``map_names``, set ``self.size_divisor`` (int or a
    per-axis tuple) in ``__init__``, store ``self.in_channels`` and ``self.num_classes``, and implement
    :meth:`forward_padded`, which sees an input whose spatial size is a multiple of ``size_divisor``.
    """

    name: ClassVar[str] = ""
    spatial_dims: int = 3
    map_names: ClassVar[tuple[str, ...]] = ()
    #: maps whose values have no fixed range (every other map lies in [0, 1]); a card shows them with
    #: ``range: "data"``
    raw_maps: ClassVar[tuple[str, ...]] = ()
    size_divisor: int | tuple[int, ...] = 1
    #: inputs are padded to at least this many multiples of ``size_divisor`` per axis (networks with
    #: instance norm need more than one voxel at the bottleneck)
    min_divisor_multiple: int = 1
    in_channels: int
    num_classes: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        original_init = cls.__init__
        signature = inspect.signature(original_init)

        @functools.wraps(original_init)
        def init_recording_config(self: SegmentationNetwork, *args: Any, **init_kwargs: Any) -> None:
            if type(self) is cls:  # record only the outermost constructor's arguments
                bound = signature.bind(self, *args, **init_kwargs)
                bound.apply_defaults()
                hparams: dict[str, Any] = {}
                for key, value in list(bound.arguments.items())[1:]:
                    kind = signature.parameters[key].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        hparams.update(value)
                    elif kind is not inspect.Parameter.VAR_POSITIONAL:
                        hparams[key] = list(value) if isinstance(value, tuple) else value
                object.__setattr__(self, "_hparams", hparams)
            original_init(self, *args, **init_kwargs)

        cls.__init__ = init_recording_config  # type: ignore[method-assign]

    # ------------------------------------------------------------------ public API
    @property
    def config(self) -> dict[str, Any]:
        """Plain-dict description (JSON-serialisable) that rebuilds this network."""
        return {"name": self.name, **getattr(self, "_hparams", {})}

    def training_inputs(self, x: torch.Tensor, labels: torch.Tensor, from_prediction: bool) -> dict[str, torch.Tensor]:
        """Extra keyword arguments of the forward pass in training (none; RSTN passes its crop mask)."""
        return {}

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> SegmentationOutput:
        self.check_input(x)
        spatial = tuple(x.shape[2:])
        padded = self.pad_to_divisor(x)
        out = self.forward_padded(padded, return_maps=return_maps)
        if not return_maps:
            out.maps = {}
        if not self.training:
            out.deep_supervision = ()
            out.aux = {}
        return self._crop_output(out, spatial)

    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        """The network proper, on an input padded to a multiple of ``size_divisor``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def divisors(self) -> tuple[int, ...]:
        d = self.size_divisor
        return tuple(d) if isinstance(d, Sequence) else (int(d),) * self.spatial_dims

    def check_input(self, x: torch.Tensor) -> None:
        """Reject inputs of the wrong dimensionality or channel count with a specific message."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        expected_ndim = self.spatial_dims + 2
        if x.ndim != expected_ndim:
            layout = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
            raise ValueError(
                f"{type(self).__name__} is a {self.spatial_dims}D network and expects a "
                f"{expected_ndim}-D tensor {layout}; got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_channels} input channel(s); "
                f"got {x.shape[1]} (input shape {tuple(x.shape)})"
            )
        if min(x.shape[2:]) < 1:
            raise ValueError(f"empty spatial size {tuple(x.shape[2:])}")

    def padding_for(self, spatial: Sequence[int]) -> list[int]:
        """``F.pad`` amounts (last axis first) that bring ``spatial`` to the size rule."""
        pads: list[int] = []
        for size, div in zip(reversed(tuple(spatial)), reversed(self.divisors())):
            pads += [0, max((-size) % div, self.min_divisor_multiple * div - size)]
        return pads

    def pad_to_divisor(self, x: torch.Tensor) -> torch.Tensor:
        """Replicate-pad the high end of each spatial axis to the size rule (see module docstring)."""
        pads = self.padding_for(x.shape[2:])
        return F.pad(x, pads, mode="replicate") if any(pads) else x

    def _crop_output(self, out: SegmentationOutput, spatial: tuple[int, ...]) -> SegmentationOutput:
        padded_spatial = tuple(out.logits.shape[2:])
        crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)

        def to_input_grid(t: torch.Tensor) -> torch.Tensor:
            if tuple(t.shape[2:]) != padded_spatial:
                mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
                t = F.interpolate(t, size=padded_spatial, mode=mode, align_corners=False)
            return t[crop]

        return SegmentationOutput(
            logits=out.logits[crop],
            deep_supervision=tuple(to_input_grid(t) for t in out.deep_supervision),
            maps={k: to_input_grid(v) for k, v in out.maps.items()},
            aux={k: to_input_grid(v) for k, v in out.aux.items()},
        )


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, the figure papers report."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
