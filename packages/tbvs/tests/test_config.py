import dataclasses

import pytest

from shared.errors import UserError
from tbvs.config import PRESETS, TrainConfig, build_config, from_plain, milestones_for, to_plain


def test_paper_defaults_are_the_official_recipe(tmp_path):
    config = build_config("paper", text_model=tmp_path)
    assert (config.lr, config.iterations, config.milestones, config.gamma) == (2e-5, 30_000, (25_000, 28_000), 0.1)
    assert (config.batch_size, config.input_size, config.clip_len, config.max_ref_offset) == (8, 320, 3, 5)
    assert (config.text_encoder, config.max_tokens, config.arch, config.variant) == (
        "hf-bert",
        20,
        "paper",
        "B+M+T+L+A",
    )
    assert config.faithful_mask and config.flow_attn_source == "rgb" and config.binarize == "relative"
    assert config.build_arch(768).text_dim == 768 and config.build_arch(768).d_model == 256


def test_cpu_presets_scale_the_milestones():
    small = build_config("small")
    assert (small.input_size, small.lr, small.iterations, small.milestones) == (96, 1e-3, 2000, (1600,))
    assert (small.text_encoder, small.arch, small.max_ref_offset) == ("tiny", "small", 3)
    demo = build_config("demo")
    assert demo.arch == "demo" and demo.milestones == milestones_for("demo", demo.iterations)
    assert build_config("demo", iterations=100).milestones == (80,)
    assert build_config("demo", iterations=100, milestones=[10, 50]).milestones == (10, 50)
    assert build_config("paper", text_model="x", iterations=3000).milestones == (2500, 2800)
    assert set(PRESETS) == {"paper", "small", "demo"}


def test_variant_sets_clip_length_and_branches():
    b = build_config("demo", variant="B").build_arch(32)
    assert (b.clip_len, b.use_flow, b.use_transformer, b.use_alignment) == (1, False, False, False)
    bt = build_config("demo", variant="BT").build_arch(32)
    assert (bt.clip_len, bt.use_flow, bt.temporal_attention) == (3, False, True)
    quirks = build_config("demo", faithful_mask=False, flow_attn_source="flow", vf_pixels=64).build_arch(32)
    assert (quirks.faithful_mask, quirks.flow_attn_source, quirks.vf_pixels) == (False, "flow", 64)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"iterations": 0}, "iterations"),
        ({"batch_size": 0}, "batch-size"),
        ({"lr": -1.0}, "lr"),
        ({"variant": "B+X"}, "variant"),
        ({"arch": "huge"}, "architecture"),
        ({"dataset": "jhmdb"}, "no training split"),
        ({"data": "a", "raw": "b"}, "either"),
        ({"flow": "raft"}, "flow"),
        ({"input_size": 100}, "multiple of 16"),
        ({"binarize": "otsu"}, "binarisation"),
        ({"text_encoder": "hf-bert"}, "--text-model"),
        ({"rgb_weights": "missing.pth"}, "not a file"),
        ({"milestones": [50, 10]}, "milestones"),
        ({"arch_overrides": {"nope": 1}}, "architecture field"),
        ({"nope": 1}, "unknown configuration"),
        ({"synthetic_train_videos": 0}, "synthetic"),
    ],
)
def test_impossible_values_are_refused(overrides, match):
    with pytest.raises(UserError, match=match):
        build_config("demo", **overrides)


def test_unknown_preset_and_paper_without_bert():
    with pytest.raises(UserError, match="preset"):
        build_config("huge")
    with pytest.raises(UserError, match="--text-model"):
        build_config("paper")


def test_rgb_weights_need_the_resnet_backbone(tmp_path):
    weights = tmp_path / "r101.pth"
    weights.write_bytes(b"")
    with pytest.raises(UserError, match="preset paper"):
        build_config("demo", rgb_weights=weights)


def test_plain_round_trip(tmp_path):
    config = build_config("demo", data=tmp_path, iterations=50, arch_overrides={"depth": 2})
    plain = to_plain(config)
    assert plain["data"] == str(tmp_path) and plain["milestones"] == [40]
    again = from_plain(plain)
    assert again == config and isinstance(again, TrainConfig)
    assert dataclasses.replace(again, seed=1) != config
