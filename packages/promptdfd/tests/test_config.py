"""Tests of the run configuration and its presets (promptdfd.config)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from promptdfd.config import DistillConfig, build_config, from_plain, plain
from shared.errors import UserError

#: What the demo preset changes from the dataclass's (reconstructed paper) defaults.
DEMO = {
    "topic_reward": "prob",
    "prompter_lr": 1e-2,
    "entropy_coef": 0.05,
    "tau": 2.0,
    "rl_batch_size": 16,
    "n_synth": 1600,
    "epochs": 4,
    "batch_size": 32,
}


def test_demo_defaults():
    config = build_config("demo")
    assert config == dataclasses.replace(DistillConfig(), **DEMO)
    assert config.preset == "demo"
    assert config.method == "promptdfd"
    assert config.data is None and config.teacher is None and config.generator is None
    assert config.source() == "keyword-topic toy task"
    assert build_config() == config


def test_overrides_apply():
    config = build_config("demo", seed=3, tau=4.0, method="manual-prompt", manual_prompt="news about {label}")
    assert (config.seed, config.tau, config.method) == (3, 4.0, "manual-prompt")
    assert config.manual_prompt == "news about {label}"
    assert config.prompt_len == DistillConfig().prompt_len  # the rest stays at the defaults


def test_none_means_not_given():
    config = build_config("demo", seed=None, tau=None, method=None, data=None)
    assert config == build_config("demo")


def test_paths_become_paths():
    config = build_config("demo", data="some/table.csv", teacher="t.pt")
    assert config.data == Path("some/table.csv") and isinstance(config.data, Path)
    assert isinstance(config.teacher, Path)
    assert config.source() == str(Path("some/table.csv"))


def test_the_paper_preset_is_refused():
    with pytest.raises(UserError, match="not implemented") as info:
        build_config("paper")
    assert "--preset small" in str(info.value)


def test_unknown_preset_is_refused():
    with pytest.raises(UserError, match="unknown preset"):
        build_config("huge")


def test_unknown_option_is_refused():
    with pytest.raises(UserError, match="no option bogus_option"):
        build_config("demo", bogus_option=1)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(method="gan"), "--method must be one of"),
        (dict(baseline="median"), "--baseline must be one of"),
        (dict(topic_reward="entropy"), "--topic-reward must be one of"),
        (dict(top_p=0.0), "--top-p"),
        (dict(top_p=1.5), "--top-p"),
        (dict(temperature=-0.1), "--temperature"),
        (dict(prompt_len=10, content_len=22), "exceeds the generator's context"),
        (dict(lambda_topic=0.0, lambda_adv=0.0, lambda_lm=0.0), "all reward weights are 0"),
        (dict(manual_prompt="news about"), "must contain {label}"),
        (dict(pooling="max"), "--pooling"),
        (dict(epochs=0), "--epochs must be >= 1"),
        (dict(tau=0.0), "--tau"),
        (dict(lambda_adv=-1.0), "reward weights must be >= 0"),
        (dict(baseline_momentum=1.0), "--baseline-momentum"),
    ],
)
def test_bad_values_are_refused(overrides, match):
    with pytest.raises(UserError, match=match):
        build_config("demo", **overrides)


def test_edge_values_are_accepted():
    # exactly fills the generator's context: 1 (BOS) + prompt + content == generator_max_len
    config = build_config("demo", prompt_len=10, content_len=21, generator_max_len=32)
    assert config.content_len == 21
    assert build_config("demo", top_p=1.0).top_p == 1.0
    assert build_config("demo", schedule="alternating").schedule == "alternating"
    assert build_config("demo", lambda_topic=0.0, lambda_adv=1.0).lambda_topic == 0.0


def test_plain_from_plain_round_trip():
    config = build_config("demo", seed=7, data="x/y.csv", generator="g.pt", lambda_adv=0.5, schedule="alternating")
    values = plain(config)
    assert values["data"] == str(Path("x/y.csv")) and values["teacher"] is None
    restored = from_plain(json.loads(json.dumps(values)))
    assert restored == config
    assert dataclasses.asdict(restored) == dataclasses.asdict(config)


def test_from_plain_refuses_unknown_keys():
    values = plain(build_config("demo")) | {"removed_option": 1}
    with pytest.raises(UserError, match="removed_option"):
        from_plain(values)
