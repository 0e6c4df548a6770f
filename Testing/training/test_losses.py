"""training.losses against hand-computed values on a 1 x 2 x 2 x 2 example, plus minimum and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from MedSegAttentionLib.models import SegmentationOutput
from phantoms import phantom_batch
from training.losses import (
    ANUNetLoss,
    ConResNetLoss,
    RAUNetLoss,
    RSTNLoss,
    SIPNetLoss,
    build_loss,
    context_residual_target,
    loss_names,
    residual_bce,
)

# Eight voxels of one 2 x 2 x 2 volume (slice-major): foreground label and predicted P(foreground).
Y = [1, 1, 0, 0, 1, 0, 1, 0]
P = [0.9, 0.8, 0.3, 0.1, 0.6, 0.2, 0.7, 0.4]
P_SIDE = [  # three deep-supervision heads, coarsest first
    [0.6, 0.5, 0.5, 0.4, 0.5, 0.5, 0.5, 0.5],
    [0.7, 0.7, 0.2, 0.3, 0.6, 0.4, 0.8, 0.3],
    [0.8, 0.9, 0.2, 0.2, 0.7, 0.1, 0.6, 0.3],
]


def logits_of(p: list[float]) -> torch.Tensor:
    """(1, 2, 2, 2, 2) logits whose softmax foreground probability is ``p`` (background logit 0)."""
    fg = torch.tensor([math.log(v / (1 - v)) for v in p], dtype=torch.float64).view(1, 2, 2, 2)
    return torch.stack([torch.zeros_like(fg), fg], dim=1)


TARGET = torch.tensor(Y).view(1, 2, 2, 2)


# plain-arithmetic reference terms ----------------------------------------------------------------
def bce(p: list[float], y: list[int] = Y) -> float:
    return sum(-(t * math.log(q) + (1 - t) * math.log(1 - q)) for q, t in zip(p, y)) / len(p)


def dice(p: list[float], y: list[int] = Y, nr: float = 0.0, dr: float = 0.0, squared: bool = False) -> float:
    inter = sum(q * t for q, t in zip(p, y))
    denom = sum(q * q for q in p) + sum(t * t for t in y) if squared else sum(p) + sum(y)
    return (2 * inter + nr) / (denom + dr)


def focal(p: list[float], y: list[int] = Y, alpha: float = 0.25, gamma: float = 2.0) -> float:
    total = 0.0
    for q, t in zip(p, y):
        pt, at = (q, alpha) if t == 1 else (1 - q, 1 - alpha)
        total += -at * (1 - pt) ** gamma * math.log(pt)
    return total / len(p)


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-6, abs=1e-9)


# hand-computed values ------------------------------------------------------------------------------
def test_sipnet_weighted_bce_over_heads() -> None:
    out = SegmentationOutput(logits_of(P), deep_supervision=tuple(logits_of(p) for p in P_SIDE))
    expected = 0.1 * bce(P_SIDE[0]) + 0.15 * bce(P_SIDE[1]) + 0.25 * bce(P_SIDE[2]) + 0.5 * bce(P)
    assert float(SIPNetLoss()(out, TARGET)) == approx(expected)
    # eval mode (no deep supervision): the main head alone, unweighted
    assert float(SIPNetLoss()(SegmentationOutput(logits_of(P)), TARGET)) == approx(bce(P))
    with pytest.raises(ValueError, match="head weights"):
        SIPNetLoss(weights=(0.5, 0.5))(out, TARGET)


def test_context_residual_target_by_hand() -> None:
    # slice 0 = [1, 1, 0, 0], slice 1 = [1, 0, 1, 0] -> residual on slice 1 = [0, 1, 1, 0]; slice 0 is 0
    res = context_residual_target(TARGET, num_classes=2)
    assert res.shape == (1, 1, 2, 2, 2)
    assert res.flatten().tolist() == [0, 0, 0, 0, 0, 1, 1, 0]
    labels = torch.tensor([[[0, 1]], [[2, 2]], [[1, 2]]]).unsqueeze(0)  # (1, S=3, 1, 2), three classes
    res3 = context_residual_target(labels, num_classes=3)[0, :, :, 0]  # (class-1, S, W)
    assert res3[0].tolist() == [[0, 0], [0, 1], [1, 0]]  # class 1
    assert res3[1].tolist() == [[0, 0], [1, 1], [1, 0]]  # class 2


def test_context_residual_target_matches_network_module() -> None:
    conresnet = pytest.importorskip("MedSegAttentionLib.models.conresnet")
    _, labels = phantom_batch(2, (6, 8, 8), num_classes=3)
    torch.testing.assert_close(context_residual_target(labels, 3), conresnet.context_residual_target(labels, 3))


def test_conresnet_loss_by_hand() -> None:
    r_main = [2.0, -1.0, 0.5, -2.0, -0.5, 1.5, 0.0, -3.0]  # residual logits
    r_ds1 = [0.0] * 8
    r_ds2 = [1.0] * 8
    res_y = [0, 0, 0, 0, 0, 1, 1, 0]
    w = math.log(8 / 2)  # V / V_k

    def wbce(r: list[float]) -> float:
        q = [1 / (1 + math.exp(-v)) for v in r]
        return sum(-(w * t * math.log(s) + (1 - t) * math.log(1 - s)) for s, t in zip(q, res_y)) / 8

    def aux(r: list[float]) -> torch.Tensor:
        return torch.tensor(r, dtype=torch.float64).view(1, 1, 2, 2, 2)

    out = SegmentationOutput(
        logits_of(P),
        aux={"context_residual": aux(r_main), "context_residual_ds1": aux(r_ds1), "context_residual_ds2": aux(r_ds2)},
    )
    seg = bce(P) + 1 - dice(P, dr=1.0)
    expected = seg + wbce(r_main) + 0.5 * (wbce(r_ds1) + wbce(r_ds2))
    assert float(ConResNetLoss()(out, TARGET)) == approx(expected)
    assert float(residual_bce(aux(r_main), aux(res_y))) == approx(wbce(r_main))
    assert float(ConResNetLoss()(SegmentationOutput(logits_of(P)), TARGET)) == approx(seg)  # eval mode


def test_anunet_hybrid_loss_by_hand() -> None:
    heads = [*P_SIDE, P]
    out = SegmentationOutput(logits_of(P), deep_supervision=tuple(logits_of(p) for p in P_SIDE))
    s = 1e-5
    expected = sum(focal(p) + 1 - dice(p, nr=s, dr=s, squared=True) for p in heads)
    assert float(ANUNetLoss()(out, TARGET)) == approx(expected)
    # gamma = 0 turns the focal term into alpha-balanced BCE
    balanced = sum(focal(p, gamma=0.0) + 1 - dice(p, nr=s, dr=s, squared=True) for p in heads) / 4
    assert float(ANUNetLoss(gamma=0.0, head_weights=(0.25,) * 4)(out, TARGET)) == approx(balanced)


def test_raunet_dice_loss_by_hand() -> None:
    out = SegmentationOutput(logits_of(P))
    assert float(RAUNetLoss()(out, TARGET)) == approx(1 - dice(P, nr=1.0, dr=1.0, squared=True))
    assert float(RAUNetLoss(smooth=0.0)(out, TARGET)) == approx(1 - dice(P, squared=True))  # paper Eq. 3


def test_raunet_batch_dice_and_multiclass() -> None:
    # batch of two: sums run over the whole batch (authors' code)
    logits = torch.cat([logits_of(P), logits_of(P_SIDE[1])])
    target = torch.cat([TARGET, TARGET])
    pooled = dice(P + P_SIDE[1], Y + Y, squared=True)
    assert float(RAUNetLoss(smooth=0.0)(SegmentationOutput(logits), target)) == approx(1 - pooled)
    # three classes: Dice averaged over the two foreground classes
    lg = torch.randn(1, 3, 2, 2, 2, dtype=torch.float64)
    tg = torch.tensor([0, 1, 2, 1, 2, 2, 0, 1]).view(1, 2, 2, 2)
    prob = lg.softmax(1).flatten(2)[0].tolist()
    y = tg.flatten().tolist()
    per_class = [dice(prob[k], [int(v == k) for v in y], squared=True) for k in (1, 2)]
    assert float(RAUNetLoss(smooth=0.0)(SegmentationOutput(lg), tg)) == approx(1 - sum(per_class) / 2)


def test_rstn_joint_loss_by_hand() -> None:
    coarse = P_SIDE[0]
    out = SegmentationOutput(logits_of(P), deep_supervision=(logits_of(coarse),))
    eps = 1e-6
    expected = (1 / 3) * (1 - dice(coarse, nr=eps, dr=eps)) + (2 / 3) * (1 - dice(P, nr=eps, dr=eps))
    assert float(RSTNLoss()(out, TARGET)) == approx(expected)
    via_aux = SegmentationOutput(logits_of(P), aux={"coarse": logits_of(coarse)})
    assert float(RSTNLoss()(via_aux, TARGET)) == approx(expected)
    assert float(RSTNLoss()(SegmentationOutput(logits_of(P)), TARGET)) == approx(1 - dice(P, nr=eps, dr=eps))



def test_rstn_joint_loss_over_every_predicted_slice() -> None:
    """The paper's output covers the three input slices: the same joint loss over all of them."""
    def slice_logits(p: list[float]) -> torch.Tensor:  # (1, 2 slices x 2 classes, 2, 2), slice-major
        fg = torch.tensor([math.log(v / (1 - v)) for v in p], dtype=torch.float64).view(1, 2, 2, 2)
        return torch.stack([torch.zeros_like(fg), fg], dim=2).reshape(1, 4, 2, 2)

    coarse, eps = P_SIDE[0], 1e-6
    fine_all, coarse_all = slice_logits(P), slice_logits(coarse)
    out = SegmentationOutput(fine_all[:, 2:], deep_supervision=(coarse_all[:, 2:],),
                             aux={"slices": fine_all, "coarse_slices": coarse_all})
    expected = (1 / 3) * (1 - dice(coarse, nr=eps, dr=eps)) + (2 / 3) * (1 - dice(P, nr=eps, dr=eps))
    assert float(RSTNLoss()(out, TARGET)) == approx(expected)  # TARGET as (B, slices, H, W)
    centre = float(RSTNLoss()(out, TARGET[:, 1]))  # the centre-slice target alone: the old contract
    assert centre == approx((1 / 3) * (1 - dice(coarse[4:], Y[4:], eps, eps)) + (2 / 3) * (1 - dice(P[4:], Y[4:], eps, eps)))


# minimum, gradients, registry ---------------------------------------------------------------------
def _outputs(name: str, logits: torch.Tensor, labels: torch.Tensor, perfect: bool) -> SegmentationOutput:
    """Training-mode output of network ``name``: heads equal to ``logits``, residual heads (perfect or random)."""
    num_classes = logits.shape[1]
    if name in ("sipnet", "anunet"):
        n = 3
        return SegmentationOutput(logits, deep_supervision=tuple(logits.clone() for _ in range(n)))
    if name == "rstn":
        return SegmentationOutput(logits, deep_supervision=(logits.clone(),))
    if name == "conresnet":
        res = context_residual_target(labels, num_classes)
        res_logits = 20.0 * (2 * res - 1) if perfect else torch.randn_like(res)
        keys = ("context_residual", "context_residual_ds1", "context_residual_ds2")
        return SegmentationOutput(logits, aux={k: res_logits.clone() for k in keys})
    return SegmentationOutput(logits)


@pytest.mark.parametrize("name", loss_names())
@pytest.mark.parametrize("num_classes", [2, 3])
def test_perfect_prediction_is_near_minimum(name: str, num_classes: int) -> None:
    _, labels = phantom_batch(2, (6, 10, 10), num_classes=num_classes)
    perfect = 20.0 * torch.nn.functional.one_hot(labels, num_classes).movedim(-1, 1).float()
    random = torch.randn_like(perfect)
    loss = build_loss(name)
    best = float(loss(_outputs(name, perfect, labels, True), labels))
    worse = float(loss(_outputs(name, random, labels, False), labels))
    floor = 0.0
    if name == "conresnet":  # Dice without numerator smoothing (Eq. 7, eps = 1): minimum 1 / (2|Y_k| + 1) > 0
        sizes = [int((labels[b] == k).sum()) for b in range(2) for k in range(1, num_classes)]
        floor = sum(1 / (2 * n + 1) for n in sizes) / len(sizes)
    assert floor - 1e-6 <= best < floor + 1e-3 and worse > 10 * best


@pytest.mark.parametrize("name", loss_names())
def test_gradients_reach_every_head(name: str) -> None:
    _, labels = phantom_batch(1, (4, 8, 8), num_classes=2)
    out = _outputs(name, torch.randn(1, 2, 4, 8, 8), labels, False)
    leaves = [out.logits, *out.deep_supervision, *out.aux.values()]
    leaves = [t.detach().requires_grad_() for t in leaves]
    it = iter(leaves)
    logits = next(it)
    out = SegmentationOutput(logits, tuple(next(it) for _ in out.deep_supervision), aux={k: next(it) for k in out.aux})
    loss = build_loss(name)(out, labels)
    assert loss.ndim == 0
    loss.backward()
    for t in leaves:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_bad_inputs_are_rejected() -> None:
    out = SegmentationOutput(logits_of(P))
    with pytest.raises(ValueError, match="target must be"):
        RAUNetLoss()(out, TARGET[0])
    with pytest.raises(TypeError, match="integer"):
        RAUNetLoss()(out, TARGET.float())
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        RAUNetLoss()(out, TARGET * 2)
    with pytest.raises(TypeError, match="SegmentationOutput"):
        RAUNetLoss()(out.logits, TARGET)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="known losses"):
        build_loss("unet")
    with pytest.raises(ValueError, match="bad parameters"):
        build_loss("rstn", lam=0.5)
    assert isinstance(build_loss("raunet_3d"), RAUNetLoss)
    assert build_loss("rstn", coarse_weight=0.5).coarse_weight == 0.5
