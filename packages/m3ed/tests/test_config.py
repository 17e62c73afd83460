"""The run configuration: presets, the learning rate by preset and model, MDI options, refused values."""

import pytest

from m3ed.config import LEARNING_RATES, PRESETS, TrainConfig, build_config
from shared.errors import UserError


def test_paper_preset_is_the_official_recipe_and_the_default():
    config = build_config("paper")
    assert config == TrainConfig()
    assert (config.model, config.modalities, config.scale) == ("mdi", "avl", "paper")
    assert (config.epochs, config.batch_size, config.lr, config.clip) == (50, 32, 3e-5, 5.0)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_learning_rate_and_sizes_follow_preset_and_model(preset):
    for model, lr in LEARNING_RATES[preset].items():
        config = build_config(preset, model=model)
        assert (config.lr, config.scale, config.epochs) == (lr, preset, PRESETS[preset]["epochs"])
    assert build_config(preset, model="utt-mlp", lr=0.5).lr == 0.5
    assert build_config(preset, epochs=None).epochs == PRESETS[preset]["epochs"]  # None: not given


def test_modalities_and_mdi_options():
    config = build_config("demo", modalities="LA", branches="global, intra", combine="per_block")
    assert config.modalities == "al" and config.modality_names == ("audio", "text")
    assert config.model_overrides == {"branches": ("global", "intra"), "combine": "per_block"}
    assert build_config("demo", branches=("inter",)).model_overrides == {"branches": ("inter",)}
    assert build_config("demo", model="dialoguernn", fusion="gate").model_overrides == {}  # MDI options only
    assert build_config("demo", freeze_fusion_projection=True).model_overrides == {"freeze_fusion_projection": True}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"preset": "huge"}, "unknown preset"),
        ({"model": "dialoguexl"}, "unknown model"),
        ({"modalities": "xyz"}, "bad modalities"),
        ({"branches": "global,future"}, "--branches"),
        ({"branches": ""}, "--branches"),
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": 0}, "--batch-size"),
        ({"lr": -1.0}, "--lr"),
        ({"clip": -1.0}, "--clip"),
        ({"combine": "middle"}, "--combine"),
        ({"workers": -1}, "--workers"),
        ({"task": "blend"}, "--task must be one of single, multi"),
        ({"task": "multi", "annotations": "none"}, "--task multi needs annotation.json"),
        ({"task": "multi", "class_weights": True}, "--class-weights applies to --task single only"),
        ({"at_least_one": True}, "--at-least-one applies to --task multi only"),
        ({"nodal_attention": False}, "--no-nodal-attention applies to --model dialoguegcn only"),
    ],
)
def test_impossible_values_are_refused(overrides, message):
    overrides = dict(overrides)
    with pytest.raises(UserError, match=message):
        build_config(overrides.pop("preset", "demo"), **overrides)
