import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from shared.checkpoint import load_checkpoint
from shared.errors import UserError
from shared.logging import read_metrics
from tbvs.config import build_config
from tbvs.data import prepare_a2d
from tbvs.engine import (
    EVAL_COLUMNS,
    IterationBatches,
    Segmenter,
    clip_dataset,
    evaluate,
    evaluate_file,
    fit,
    load_model,
    read_eval,
    resolve_data,
    synthetic_key,
)
from tbvs.synthetic import make_synthetic
from tbvs.text import WordTokenizer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tbvs-data")
    make_synthetic(root / "raw", train_videos=6, test_videos=4, size=96, seed=3, oracle_flow=True)
    prepare_a2d(root / "raw", root / "prepared", flow="oracle")
    return root / "prepared"


def tiny(prepared, **overrides):
    values = dict(data=prepared, input_size=64, batch_size=4, iterations=10, log_every=5, checkpoint_every=5)
    values |= dict(eval_batch_size=16, flow="oracle")
    return build_config("demo", **{**values, **overrides})


def test_loss_decreases_over_30_iterations(prepared, tmp_path):
    results = fit(tiny(prepared, iterations=30, log_every=10), tmp_path / "run", CPU, quiet=True)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [10, 20, 30]
    assert records[-1]["total"] < 0.7 * records[0]["total"]
    assert {"seg", "vl", "fl", "vf", "total", "train_iou", "lr", "it_s"} <= set(records[0])
    assert records[-1]["lr"] == pytest.approx(1e-4)  # x0.1 at 80% (iteration 24)
    assert results["iterations"] == 30 and set(results["metrics"]) == {"all", "ambiguous", "appearance"}
    assert set(results["metrics"]["all"]) == set(EVAL_COLUMNS)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "vocab.txt", "metrics.jsonl", "eval.csv", "final.pt", "results.json"} <= files
    assert sorted(f for f in files if f.startswith("checkpoint-")) == [
        "checkpoint-00000025.pt",
        "checkpoint-00000030.pt",
    ]


def test_resume_reproduces_an_uninterrupted_run(prepared, tmp_path):
    config = tiny(prepared, vf_pixels=32, eval_every=4, workers=1)  # dropout, pixel sampling, a loader worker
    full = fit(config, tmp_path / "full", CPU, quiet=True)
    part = fit(config, tmp_path / "part", CPU, quiet=True, stop_after=6)
    assert part == {"iterations": 6, "stopped": True} and not (tmp_path / "part" / "results.json").exists()
    resumed = fit(config, tmp_path / "part", CPU, quiet=True, resume=True)
    one = load_checkpoint(tmp_path / "full" / "final.pt")["model"]
    two = load_checkpoint(tmp_path / "part" / "final.pt")["model"]
    assert one.keys() == two.keys()
    for name in one:
        assert torch.equal(one[name], two[name]), name
    assert resumed["metrics"] == full["metrics"]

    def logged(run):
        return [{k: v for k, v in r.items() if k != "it_s"} for r in read_metrics(tmp_path / run / "metrics.jsonl")]

    assert logged("part") == logged("full")  # the log window is saved in the checkpoint too
    rows = read_eval(tmp_path / "part" / "eval.csv")
    assert [r["iteration"] for r in rows if r["subset"] == "all"] == [4, 8, 10]


def test_reloaded_checkpoint_gives_identical_logits(prepared, tmp_path):
    config = tiny(prepared, iterations=5)
    results = fit(config, tmp_path / "run", CPU, quiet=True)
    final, last = load_model(tmp_path / "run" / "final.pt"), load_model(tmp_path / "run" / "checkpoint-00000005.pt")
    test = clip_dataset(config, prepared, "test", final.net.arch, train=False)
    batch = [test[i] for i in range(3)]
    images, flows = torch.stack([b["images"] for b in batch]), torch.stack([b["flows"] for b in batch])
    ids, attn = final.tokenizer.encode([b["query"] for b in batch])
    logits = [Segmenter(m.text, m.net)(images, flows, ids, attn).logits for m in (final, last)]
    assert torch.equal(logits[0], logits[1])
    assert evaluate_file(tmp_path / "run" / "final.pt", prepared, CPU)["metrics"] == results["metrics"]


class _Oracle(nn.Module):
    """Predicts the letterboxed ground truth smuggled into channel 0 of the last frame (or its complement)."""

    def __init__(self, invert=False):
        super().__init__()
        self.arch = build_config("demo").build_arch(8)
        self.invert = invert

    def predict(self, images, flows, tokens, mask):
        p = images[:, -1, :1]
        return 1 - p if self.invert else p


class _IdsAsTokens(nn.Module):
    def forward(self, ids, attn):
        return ids.float()


class _MaskInImages(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.__dict__.update(dataset.__dict__)
        self._base = dataset

    def set_epoch(self, epoch):
        self._base.set_epoch(epoch)

    def __len__(self):
        return len(self._base)

    def gt_mask(self, index):
        return self._base.gt_mask(index)

    def __getitem__(self, index):
        item = self._base[index]
        item["images"][-1, 0] = item["mask"][0]
        return item


def test_evaluate_perfect_and_inverted_predictions(prepared):
    config = tiny(prepared, input_size=96)  # the frames' own size: no resampling
    test = _MaskInImages(clip_dataset(config, prepared, "test", config.build_arch(8), train=False))
    tokenizer = WordTokenizer.from_sentences([s.query for s in test.samples], 12)

    encoder = _IdsAsTokens()
    perfect = evaluate(_Oracle(), encoder, tokenizer, test, CPU, binarize="relative", batch_size=5)
    for subset in ("all", "ambiguous", "appearance"):
        assert perfect[subset]["mean_iou"] == pytest.approx(1.0) and perfect[subset]["mAP"] == 1.0
    inverted = evaluate(_Oracle(invert=True), encoder, tokenizer, test, CPU, binarize="absolute", batch_size=5)
    assert inverted["all"]["overall_iou"] < 1e-6 and inverted["all"]["P@0.5"] == 0.0


def test_zero_work_guards(prepared, tmp_path):
    with pytest.raises(UserError, match="fewer than one batch"):
        fit(tiny(prepared, batch_size=500), tmp_path / "a", CPU, quiet=True)
    with pytest.raises(UserError, match="iterations"):
        tiny(prepared, iterations=0)
    empty = tmp_path / "empty"
    shutil.copytree(prepared, empty)
    (empty / "A2D" / "a2d_txt" / "test.txt").write_text("")
    with pytest.raises(UserError, match="no samples"):
        fit(tiny(empty), tmp_path / "b", CPU, quiet=True)
    with pytest.raises(UserError, match=r"no checkpoint|--resume"):
        fit(tiny(prepared), tmp_path / "c", CPU, quiet=True, resume=True)
    with pytest.raises(UserError, match="not a file written by tbvs-train"):
        bogus = tmp_path / "bogus.pt"
        torch.save({"weights": torch.zeros(1)}, bogus)
        load_model(bogus)


def test_iteration_batches_resume_mid_epoch():
    whole = list(IterationBatches(10, 4, seed=1, start=0, iterations=7))
    assert len(whole) == 7 and all(len(b) == 4 for b in whole)
    assert sorted(i for b, _ in zip(whole[:2], range(2), strict=True) for i, _ in b) == sorted(
        {i for b in whole[:2] for i, _ in b}
    )  # no repeat within an epoch (2 batches per epoch)
    assert [e for _, e in whole[2]] == [1] * 4 and whole[2] != whole[0]
    assert list(IterationBatches(10, 4, seed=1, start=3, iterations=7)) == whole[3:]


def test_synthetic_set_is_generated_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = build_config("demo", synthetic_train_videos=2, synthetic_test_videos=1, flow="oracle")
    root = resolve_data(config, quiet=True)
    assert root.name == "prepared" and root.parent.name == synthetic_key(config)
    stamp = (root / "A2D" / "a2d_txt" / "train.txt").stat().st_mtime_ns
    assert resolve_data(config, quiet=True) == root
    assert (root / "A2D" / "a2d_txt" / "train.txt").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in root.parent.iterdir()) == ["prepared"]  # no temporary folder left


def test_two_process_gloo_ddp(prepared, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "tbvs.cli", "train", "--data", str(prepared), "--iterations", "4", "--batch-size", "4"]
    cmd += ["--input-size", "64", "--device", "cpu", "--threads", "1", "--quiet", "--out", str(tmp_path / "ddp")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    results = load_checkpoint(tmp_path / "ddp" / "final.pt")
    assert results["config"]["batch_size"] == 4
    # the sharded evaluation of the two processes equals a single-process evaluation of the same weights
    single = evaluate_file(tmp_path / "ddp" / "final.pt", prepared, CPU)["metrics"]
    import json

    written = json.loads((tmp_path / "ddp" / "results.json").read_text())["metrics"]
    for subset, values in single.items():
        assert written[subset] == pytest.approx(values, abs=1e-9)
