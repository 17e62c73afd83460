"""tbvs-bench on a tiny size: every measurement is present and positive, shares add up, --out writes JSON."""

import json

import pytest
import torch

from shared.errors import UserError
from tbvs import bench, cli


def _check(report):
    assert set(report["flow_frames_per_s"]) <= {"farneback", "horn_schunck"} and report["flow_frames_per_s"]
    assert all(v > 0 for v in report["flow_frames_per_s"].values())
    paper = report["paper_model"]
    assert paper["train_clips_per_s"] > 0 and paper["infer_clips_per_s"] > 0
    shares = paper["shares"]
    assert set(bench.MODULES) <= set(shares) and abs(sum(shares.values()) - 1) < 1e-6
    assert shares["RGB backbone"] > 0 and shares["backward + optimizer"] > 0
    assert set(report["demo_train_it_per_s"]) == set(bench.DEMO_VARIANTS)


def test_bench_cli_tiny_text_encoder_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--size", "32", "--steps", "1", "--demo-steps", "1", "--text", "tiny", "--device", "cpu", "--out", str(out)]
    report = cli.bench_command(argv)
    _check(report)
    assert report["paper_model"]["text_encoder"].startswith("tiny")
    assert json.loads(out.read_text())["size"] == 32
    assert "share of the training step" in capsys.readouterr().out


def test_bench_random_bert_builds_offline():
    pytest.importorskip("transformers")
    report = bench.paper_model(torch.device("cpu"), size=32, steps=1, text="bert")
    assert report["text_encoder"] == "BERT-base (random init)" and report["parameters_m"] > 100
    assert report["shares"]["text encoder"] > 0


def test_bench_refuses_impossible_sizes():
    with pytest.raises(UserError, match="multiple of 16"):
        bench.benchmark(torch.device("cpu"), size=40)
