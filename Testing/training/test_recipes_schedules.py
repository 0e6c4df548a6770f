"""Recipes hold each paper's loss, optimiser, schedule and sampling; settings inference reads from the
card come from the card; the schedules (poly, inverse time, multistep, epoch plateau) by hand."""

from __future__ import annotations

import math

import pytest
import torch

from MedSegAttentionLib.modelstore.cards import builtin_cards
from MedSegAttentionLib.models import build_network
from training.recipes import card_slice_context, load_recipe, recipe_names
from training.schedules import EpochPlateau, build_optimizer, build_scheduler, step_scheduler


def _stage(name: str, role: str | None = None, overrides: list[str] | None = None):
    return load_recipe(name, overrides or []).for_stage(role)


# ----------------------------------------------------------------------------------------------- papers
def test_sipnet_recipe_follows_the_paper() -> None:
    r = _stage("sipnet-prostate-mr")
    assert r["loss"] == {"name": "sipnet", "weights": [0.1, 0.15, 0.25, 0.5]}  # deep supervision (Sec. 3.1, code)
    assert r["optimizer"]["name"] == "sgd" and r["optimizer"]["momentum"] == 0.9 and r["optimizer"]["lr"] == 1e-4
    assert r["scheduler"] == {"name": "inverse_time", "decay": 1e-6}  # Sec. 4.1
    sampling, augment = r["sampling"], r["augment"]
    assert sampling["patch_size"] == [96, 96, 16] and sampling["batch_size"] == 4 and sampling["crop"] == "uniform"
    assert augment["flip"] > 0 and augment["rotate"]["prob"] > 0 and augment["scale"]["prob"] > 0  # Sec. 4.2


def test_conresnet_recipe_follows_the_paper() -> None:
    r = _stage("conresnet-pancreas-ct")
    assert r["loss"] == {"name": "conresnet", "ds_weight": 0.5}  # Eq. 9, lambda = 0.5
    assert r["optimizer"] == {"name": "adam", "lr": 1e-4, "weight_decay": 5e-4}
    assert r["scheduler"] == {"name": "poly", "power": 0.9} and r["train"]["max_steps"] == 40000
    assert r["sampling"]["patch_size"] == [120, 120, 64] and r["sampling"]["batch_size"] == 2
    assert r["augment"]["flip"] > 0 and r["augment"]["flip_axes"] is None and r["augment"]["scale"]["prob"] > 0
    assert r["data"]["folds"] == 4  # 4-fold cross-validation on Pancreas-CT


def test_anunet_recipe_follows_the_paper() -> None:
    r = _stage("anunet-liver-ct")
    assert r["loss"] == {"name": "anunet", "alpha": 0.25, "gamma": 2.0}
    assert r["sampling"]["mode"] == "slice" and r["sampling"]["patch_size"][:2] == [256, 256]  # Table 1


def test_raunet_stages_follow_the_paper() -> None:
    recipe = load_recipe("raunet-liver-tumour-ct")
    assert recipe.roles == ["localizer", "liver", "tumour"]
    localizer, liver, tumour = (recipe.for_stage(role) for role in recipe.roles)
    for stage in (localizer, liver, tumour):
        assert stage["loss"]["name"] == "raunet" and stage["optimizer"]["lr"] == 1e-3
        assert stage["scheduler"] == {"name": "plateau", "factor": 0.1, "patience": 20}  # Sec. III-I
    assert localizer["sampling"]["mode"] == "slice" and localizer["data"]["label_mapping"] == "lits_liver"
    assert liver["sampling"]["patch_size"] == [224, 224, 32] and liver["data"]["label_mapping"] == "lits_liver"
    assert tumour["sampling"]["patch_size"] == [128, 128, 32] and tumour["data"]["label_mapping"] == "lits_tumour"
    box_margin = recipe.card["inference"]["box_margin"]
    for stage in (liver, tumour):  # inside the liver box the localiser gives at inference
        assert stage["sampling"]["crop_to_label"] == {"labels": [1, 2], "margin": box_margin}


def test_rstn_recipe_follows_the_paper() -> None:
    recipe = load_recipe("rstn-pancreas-ct")
    assert recipe.roles == ["axial", "coronal", "sagittal"]
    for role in recipe.roles:
        r = recipe.for_stage(role)
        assert r["sampling"]["view"] == role and r["sampling"]["slice_context"] == 1
        assert r["loss"]["name"] == "rstn" and r["loss"]["coarse_weight"] == pytest.approx(1 / 3)  # Eq. 2
        assert r["rstn"]["ground_truth_crop_steps"] == 80000 and r["train"]["max_steps"] == 120000
        assert r["optimizer"]["name"] == "sgd" and r["optimizer"]["lr"] == 1e-4
        assert r["scheduler"] == recipe.for_stage("axial")["scheduler"]
    # lr 1e-4 for 80k iterations, then 1e-6 for the 40k of fine-tuning on coarse crops (multistep:
    # see test_poly_inverse_time_and_multistep_by_hand)
    assert r["scheduler"] == {"name": "multistep", "milestones": [80000], "gamma": 0.01}
    assert r["optimizer"]["lr"] * r["scheduler"]["gamma"] == pytest.approx(1e-6)


# ----------------------------------------------------------------------------------------------- card settings
def test_slice_context_comes_from_the_card() -> None:
    rstn = load_recipe("rstn-pancreas-ct")
    assert card_slice_context(rstn.card) == 1 == rstn.for_stage("axial")["sampling"]["slice_context"]
    wider = load_recipe("rstn-pancreas-ct", ["card_overrides.inference.slice_context=2"])
    assert wider.for_stage("coronal")["sampling"]["slice_context"] == 2
    with pytest.raises(ValueError, match="slice_context 2 differs from the 1"):
        load_recipe("rstn-pancreas-ct", ["sampling.slice_context=2"]).for_stage("axial")
    raunet = load_recipe("raunet-liver-tumour-ct")  # the cascade runs its localiser without context
    assert raunet.for_stage("localizer")["sampling"]["slice_context"] == 0


def test_a_recipe_s_intensity_normalisation_replaces_the_base_card_s() -> None:
    """The left-atrium recipes build on CT cards; their MR z-score must not carry the CT window along."""
    for name in ("conresnet-left-atrium-mr-compact", "rstn-left-atrium-mr-compact", "anunet-left-atrium-mr-compact"):
        card = load_recipe(name).card
        assert card["preprocessing"]["intensity"] == {"method": "percentile_zscore", "nonzero": True,
                                                      "percentiles": [0.05, 99.95]}, name
    assert load_recipe("conresnet-pancreas-ct").card["preprocessing"]["intensity"]["window"] == [-100, 240]


def test_set_overrides_win_over_stage_values() -> None:
    recipe = load_recipe("raunet-liver-tumour-ct", ["train.max_steps=7", "stages.tumour.sampling.batch_size=3"])
    assert [recipe.for_stage(role)["train"]["max_steps"] for role in recipe.roles] == [7, 7, 7]
    assert recipe.for_stage("tumour")["sampling"]["batch_size"] == 3
    assert recipe.for_stage("liver")["train"]["steps_per_epoch"] == 2000  # stage value kept where not overridden
    with pytest.raises(ValueError, match="sampling.crop"):
        load_recipe("sipnet-prostate-mr", ["sampling.crop=random"])
    with pytest.raises(ValueError, match="choose --stage"):
        recipe.for_stage(None)


# ----------------------------------------------------------------------------------------------- schedules
def _lrs(cfg: dict, steps: int, max_steps: int = 100) -> list[float]:
    optimizer = build_optimizer({"name": "sgd", "lr": 0.1}, [torch.nn.Parameter(torch.zeros(1))])
    scheduler = build_scheduler(cfg, optimizer, max_steps)
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        step_scheduler(scheduler, 1.0)
    return out


def test_poly_inverse_time_and_multistep_by_hand() -> None:
    poly = _lrs({"name": "poly", "power": 0.9}, 101)
    for t in (0, 1, 37, 99, 100):  # ConResNet Eq. 10: lr0 (1 - t/T)^0.9
        assert poly[t] == pytest.approx(0.1 * (1 - t / 100) ** 0.9)
    inverse = _lrs({"name": "inverse_time", "decay": 0.01}, 51)
    assert inverse[50] == pytest.approx(0.1 / (1 + 0.01 * 50))  # Keras time decay
    multi = _lrs({"name": "multistep", "milestones": [3, 5], "gamma": 0.5}, 6)
    assert multi == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025])
    with pytest.raises(ValueError, match="unknown scheduler"):
        _lrs({"name": "cosine"}, 1)


def _plateau(losses: list[float], **kw) -> tuple[list[float], EpochPlateau]:
    optimizer = build_optimizer({"name": "adam", "lr": 1e-3}, [torch.nn.Parameter(torch.zeros(1))])
    scheduler = build_scheduler({"name": "plateau", "factor": 0.1, "patience": 2, **kw}, optimizer, 1000, steps_per_epoch=3)
    lrs = []
    for loss in losses:
        step_scheduler(scheduler, loss)
        lrs.append(scheduler.get_last_lr()[0])
    assert isinstance(scheduler, EpochPlateau)
    return lrs, scheduler


def test_plateau_reduces_after_patience_epochs_without_improvement() -> None:
    # epoch means (3 steps each): 1.0, 0.5 (better), then 0.6, 0.7 (2 bad epochs = patience), 0.8 (3rd bad)
    epochs = [[1.2, 1.0, 0.8], [0.5, 0.5, 0.5], [0.6, 0.6, 0.6], [0.7, 0.7, 0.7], [0.8, 0.8, 0.8]]
    lrs, _ = _plateau([loss for epoch in epochs for loss in epoch])
    assert lrs[:12] == [1e-3] * 12  # nothing changes within an epoch, nor after patience bad epochs
    assert lrs[-1] == pytest.approx(1e-4)  # the epoch after the patience is exhausted: x0.1
    # a single noisy step inside an epoch does not count: only the epoch mean does
    lrs, _ = _plateau([1.0] * 3 + [0.1, 5.0, 0.1] * 4)
    assert lrs[-1] == pytest.approx(1e-4)  # means 1.0, then 1.73 x 4: no improvement -> reduced


def test_plateau_state_resumes_mid_epoch() -> None:
    losses = [1.0, 0.9, 0.8, 0.9, 0.95, 0.97, 0.99, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]
    straight, _ = _plateau(losses)
    first, scheduler = _plateau(losses[:7])  # interrupted in the middle of the third epoch
    state = scheduler.state_dict()
    loaded = torch.load(_roundtrip(state), weights_only=True)  # checkpoints are weights-only
    optimizer = build_optimizer({"name": "adam", "lr": first[-1]}, [torch.nn.Parameter(torch.zeros(1))])
    resumed = build_scheduler({"name": "plateau", "factor": 0.1, "patience": 2}, optimizer, 1000, steps_per_epoch=3)
    resumed.load_state_dict(loaded)
    rest = []
    for loss in losses[7:]:
        step_scheduler(resumed, loss)
        rest.append(resumed.get_last_lr()[0])
    assert first + rest == pytest.approx(straight) and not math.isclose(straight[-1], straight[0])


def _roundtrip(state: dict):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("name", [n for n in recipe_names() if n.endswith("-compact")])
def test_a_compact_recipe_reproduces_its_bundled_card(name: str) -> None:
    """What a compact recipe trains and validates with is what the shipped card runs: the same
    preprocessing, inference settings, maps, labels and network configuration. (A base card that
    gains a setting, as the liver ANU-Net card's 256 x 256 slices, must not leak into a left-atrium
    fine-tune whose weights never saw it.)"""
    recipe = load_recipe(name)
    shipped = next(card.data for card in builtin_cards() if card.id == recipe.card["id"])
    for key in ("preprocessing", "inference", "maps", "labels"):
        assert recipe.card.get(key) == shipped.get(key), key
    for role in recipe.roles:
        built = build_network(recipe.for_stage(role).network_config())
        assert built.config == shipped["networks"][role]["config"], role
