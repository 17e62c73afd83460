import dataclasses

import pytest

from probteacher.config import CITYSCAPES_CLASSES, PRESETS, TASKS, TrainConfig, build_config, from_plain, to_plain
from shared.errors import UserError

REAL = {"source": "voc:/data/city:train", "target": "voc:/data/foggy:train", "target_test": "voc:/data/foggy:val"}


def test_paper_defaults_are_the_official_recipe():
    config = build_config("paper", **REAL)
    assert (config.lr, config.momentum, config.weight_decay) == (0.016, 0.9, 1e-4)
    assert (config.warmup_iters, config.warmup_factor, config.iterations, config.burn_in) == (400, 0.001, 30_000, 4000)
    assert (config.ema_keep_rate, config.batch_source, config.batch_target, config.grad_clip) == (0.9996, 16, 16, 10.0)
    assert config.tau == (0.5, 0.5) and config.efl_lambda == (0.5, 0.5) and config.efl and config.learnable_anchors
    assert (config.checkpoint_every, config.eval_every, config.eval_metric) == (4000, 400, "voc12")
    assert config.method == "pt" and config.hard_threshold is None and config.scale_down_paste
    assert config.detector == "vgg16" and config.class_names == CITYSCAPES_CLASSES
    detector = config.detector_config().resolved()
    assert (detector.backbone, detector.num_classes, detector.min_size, detector.normalisation) == (
        "vgg16",
        8,
        600,
        "caffe",
    )
    assert build_config("paper", task="k2c", **REAL).detector_config().num_classes == 1


def test_cpu_presets():
    small = build_config("small")
    assert (small.task, small.detector, small.batch_source, small.batch_target) == ("toy-fog", "tiny", 4, 4)
    assert (small.burn_in, small.iterations, small.lr, small.warmup_iters, small.ema_keep_rate) == (
        1500,
        3000,
        1e-3,
        100,
        0.99,
    )
    assert small.optimizer == "adamw" and small.detector_config().resolved().roi_align == "separable"
    assert small.eval_every == 500 and small.toy_source_train == 1500
    demo = build_config("demo")
    assert demo.detector == "tiny" and demo.burn_in < demo.iterations and demo.toy_source_train < 1500
    assert set(PRESETS) == {"paper", "small", "demo"}
    assert set(TASKS) == {"c2f", "c2f-0.02", "c2b", "k2c", "s2c", "toy-fog", "toy-fog-scale"}
    assert TASKS["toy-fog-scale"].scale_shift > 1 and TASKS["s2c"].classes == ("car",)
    assert len(build_config("demo", toy_objects="digits").class_names) == 10


def test_compat_switches_every_flag_and_explicit_values_win():
    correct = build_config("demo")
    assert (correct.rpn_bg_prob, correct.rpn_sigma_rescore, correct.anchor_weight_decay) == ("correct", "correct", 0.0)
    official = build_config("demo", compat="official")
    assert (official.rpn_bg_prob, official.rpn_sigma_rescore, official.teacher_var_space) == ("official",) * 3
    assert official.anchor_weight_decay == 1e-4 and official.scale_down_paste
    mixed = build_config("demo", compat="official", rpn_bg_prob="correct", scale_down_paste=False)
    assert mixed.rpn_bg_prob == "correct" and not mixed.scale_down_paste and mixed.rpn_sigma_rescore == "official"
    detector = official.detector_config()
    assert (detector.rpn_bg_prob, detector.rpn_sigma_rescore, detector.teacher_var_space) == ("official",) * 3


def test_switches_reach_the_detector():
    config = build_config("demo", tau=0.25, efl_lambda=[1.0, 0.0], efl=False, learnable_anchors=False)
    detector = config.detector_config()
    assert (detector.tau_cls, detector.tau_loc, detector.efl_lambda_cls, detector.efl_lambda_loc) == (
        0.25,
        0.25,
        1.0,
        0.0,
    )
    assert not detector.efl and not detector.learnable_anchors
    assert build_config("demo", detector_overrides={"min_size": 96}).detector_config().resolved().min_size == 96


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"iterations": 0}, "iterations"),
        ({"burn_in": 700, "iterations": 600}, "burn-in"),
        ({"burn_in": 600, "iterations": 600}, "burn-in"),
        ({"burn_in": -1}, "burn-in"),
        ({"batch_source": 0}, "batch-size"),
        ({"lr": 0.0}, "lr"),
        ({"task": "m2c"}, "unknown task"),
        ({"method": "mean-teacher"}, "method"),
        ({"hard_threshold": 1.5}, "hard-threshold"),
        ({"hard_threshold": 0.7, "method": "source-only"}, "hard-threshold"),
        ({"tau": [0.5, 0.5, 0.5]}, "tau"),
        ({"tau": 0.0}, "tau"),
        ({"ema_keep_rate": 1.5}, "ema-keep-rate"),
        ({"compat": "legacy"}, "compat"),
        ({"rpn_sigma_rescore": "maybe"}, "rpn_sigma_rescore"),
        ({"detector": "huge"}, "detector"),
        ({"detector_overrides": {"nope": 1}}, "detector field"),
        ({"weights": "missing.pth"}, "not a file"),
        ({"eval_metric": "f1"}, "metric"),
        ({"workers": -1}, "workers"),
        ({"toy_fog_level": "pea-soup"}, "fog level"),
        ({"source": "voc:a:b"}, "generates its data"),
        ({"classes": ["a", "b"]}, "fixes its classes"),
        ({"task": "c2f"}, "--source SPEC --target SPEC --target-test SPEC"),
        ({"task": "c2f", **REAL, "source": "folder/x"}, "voc:ROOT:SPLIT"),
        ({"task": "c2f", **REAL, "classes": ["car", "car"]}, "distinct"),
        ({"nope": 1}, "unknown configuration"),
    ],
)
def test_impossible_values_are_refused(overrides, match):
    with pytest.raises(UserError, match=match):
        build_config("demo", **overrides)


def test_unknown_preset_and_source_only_needs_no_target():
    with pytest.raises(UserError, match="preset"):
        build_config("huge")
    config = build_config("paper", method="source-only", source=REAL["source"], target_test=REAL["target_test"])
    assert config.target is None and config.burn_in == 4000


def test_plain_round_trip(tmp_path):
    weights = tmp_path / "vgg16_caffe.pth"
    weights.write_bytes(b"")
    config = build_config("paper", task="k2c", weights=weights, tau=0.3, detector_overrides={"min_size": 512}, **REAL)
    plain = to_plain(config)
    assert plain["weights"] == str(weights) and plain["tau"] == [0.3, 0.3]
    again = from_plain(plain)
    assert again == config and isinstance(again, TrainConfig)
    assert dataclasses.replace(again, seed=1) != config
