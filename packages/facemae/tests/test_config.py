"""Presets of both stages and the refusal of impossible options."""

import pytest

from facemae.config import FRConfig, MAEConfig, build_config, phi_config, plain
from facemae.models import MAE_CONFIGS
from shared.errors import UserError


def test_presets_follow_the_size_table(tmp_path):
    demo, small = build_config("mae", "demo"), build_config("mae", "small")
    paper = build_config("mae", "paper", data=tmp_path)
    assert (demo.model, demo.face_size, demo.batch_size, demo.mask_ratio) == ("mae_vit_tiny_patch4", 32, 32, 0.75)
    assert (small.model, small.face_size, small.epochs, small.warmup_epochs) == ("mae_vit_small_patch8", 112, 100, 10)
    assert (paper.model, paper.face_size, paper.epochs, paper.batch_size) == ("mae_vit_base_patch16", 112, 800, 4096)
    assert MAE_CONFIGS[paper.model]["img_size"] == 224  # the 112 faces are upsampled x2 for patch 16
    assert paper.lr == pytest.approx(1.5e-4 * 4096 / 256) and paper.loss_on == "masked" and paper.lambda_irm == 1.0
    assert (demo.lr, demo.lambda_irm) == (pytest.approx(2e-3), 0.1)
    fr_demo, fr_paper = build_config("fr", "demo"), build_config("fr", "paper", data=tmp_path)
    assert (fr_demo.network, fr_demo.s, fr_demo.m, fr_demo.margins) == ("iresnet_mini", 32.0, 0.3, (1.0, 0.3, 0.0))
    assert (fr_paper.network, fr_paper.lr, fr_paper.lr_steps, fr_paper.epochs) == ("iresnet50", 0.1, [20, 28, 32], 34)
    assert build_config("fr", "demo", margin="cosface", m=0.4).margins == (1.0, 0.0, 0.4)


def test_overrides_apply_and_none_means_not_given():
    config = build_config("mae", "demo", mask_ratio=0.5, lambda_irm=None, epochs=3)
    assert (config.mask_ratio, config.lambda_irm, config.epochs) == (0.5, 0.1, 3)  # demo: lambda 0.1
    phi = phi_config(config)
    assert isinstance(phi, FRConfig) and (phi.network, phi.face_size, phi.epochs) == ("iresnet_mini", 32, 6)
    assert all(step < phi.epochs for step in phi.lr_steps)
    assert plain(config)["stage"] == "mae" and plain(phi)["stage"] == "fr"


@pytest.mark.parametrize(
    ("stage", "options", "message"),
    [
        ("mae", {"mask_ratio": 0.0}, "(0, 1)"),
        ("mae", {"mask_ratio": 1.0}, "(0, 1)"),
        ("mae", {"mask_ratio": 0.99}, "no visible patch"),
        ("mae", {"warmup_epochs": 8}, "warmup"),
        ("mae", {"irm": "cosine"}, "--irm"),
        ("mae", {"lambda_irm": -1.0}, "lambda"),
        ("mae", {"identities_per_batch": 1, "images_per_identity": 2}, ">= 3 images"),
        ("mae", {"network": "iresnet50"}, "no option network"),
        ("fr", {"lr_steps": [9]}, "outside"),
        ("fr", {"face_size": 40}, "multiple of 16"),
        ("fr", {"margin": "sphereface"}, "--margin"),
        ("sr", {}, "unknown stage"),
        ("mae", {"preset": "tiny"}, "unknown preset"),
    ],
)
def test_impossible_values_are_refused(stage, options, message):
    preset = options.pop("preset", "demo")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config(stage, preset, **options)


def test_paper_preset_needs_real_data():
    with pytest.raises(UserError, match="--data"):
        build_config("mae", "paper")
    assert isinstance(build_config("mae", "small"), MAEConfig)


def test_compose_pred_with_masked_loss_warns():
    with pytest.warns(UserWarning, match="loss-on all"):
        build_config("mae", "demo", compose="pred")
