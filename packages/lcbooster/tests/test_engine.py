"""The co-divide engine on tiny digits: phases, gradient routing, index bookkeeping, views."""

import dataclasses
import warnings

import pytest
import torch

from lcbooster.config import build_config
from lcbooster.data import load_embedded
from lcbooster.engine import CoTrainer, TrainData, make_views, summarise
from lcbooster.models import build_model
from lcbooster.noise import symmetric_noise
from shared.logging import MetricsWriter

COUNT = 200


@pytest.fixture(scope="module")
def digits():
    return load_embedded("digits")


def _trainer(digits, method="lcbooster", seed=0, **overrides) -> CoTrainer:
    values = {"epochs": 4, "warmup_epochs": 1, "relabel_epochs": [3], "batch_size": 16, "warmup_batch_size": 32}
    values |= {"seed": seed}
    with warnings.catch_warnings():  # overriding λu warns (Table 7); expected here
        warnings.simplefilter("ignore")
        config = build_config("digits", "sym50", method, "demo", **(values | overrides))
    clean = digits.y_train[:COUNT]
    noisy = torch.as_tensor(symmetric_noise(clean.numpy(), 0.5, 10, seed=seed))
    views = make_views(config, digits)  # --strong-aug takes effect, as in fit
    data = TrainData(digits.x_train[:COUNT], noisy, digits.x_test[:100], digits.y_test[:100], 10, views, clean)
    torch.manual_seed(seed)
    nets = [build_model("small_cnn", 10, 1) for _ in range(1 if method == "ce" else 2)]
    return CoTrainer(config, nets, data, torch.device("cpu"), progress=False)


@pytest.mark.parametrize("method", ["ce", "dividemix", "lcbooster"])
def test_each_method_runs_its_phases(digits, method):
    trainer = _trainer(digits, method)
    records = [trainer.run_epoch(epoch) for epoch in (1, 2, 3)]
    assert [r["phase"] for r in records] == (["ce"] * 3 if method == "ce" else ["warmup", "cotrain", "cotrain"])
    assert records[-1]["test_acc"] == trainer.evaluate()["test_acc"]  # the record is the ensemble's test score
    assert records[-1]["best"] == max(r["test_acc"] for r in records)
    if method != "ce":
        assert {"n_labeled_1", "labeled_precision_2", "auc_1", "loss_x_1", "loss_u_2"} <= set(records[1])
        assert 0 < records[1]["n_labeled_1"] < COUNT
    assert ("relabel_overwritten" in records[2]) == (method == "lcbooster")


def test_training_one_net_leaves_the_other_untouched(digits):
    trainer = _trainer(digits, "dividemix")
    trainer.run_epoch(1)
    labeled = torch.zeros(COUNT, dtype=torch.bool)
    labeled[:100] = True
    trainer.train_epoch(1, 2, labeled, torch.rand(COUNT))  # leaves net 2 in train mode, as in an epoch
    before = [{k: v.clone() for k, v in core.state_dict().items()} for core in trainer.cores]
    trainer.train_epoch(0, 2, labeled, torch.rand(COUNT))
    after = [core.state_dict() for core in trainer.cores]
    assert all(torch.equal(before[1][k], after[1][k]) for k in before[1])  # frozen partner: weights and BN
    assert any(not torch.equal(before[0][k], after[0][k]) for k in before[0] if k.endswith("weight"))


def test_labelled_batches_carry_their_own_clean_probability(digits):
    """Regression of the official 'huge bug': w must be indexed by the labelled indices."""
    trainer = _trainer(digits, "dividemix")
    seen = []
    original = trainer._loader

    def spy(tensors, *args, **kwargs):
        seen.append(tensors)
        return original(tensors, *args, **kwargs)

    trainer._loader = spy
    labeled = torch.zeros(COUNT, dtype=torch.bool)
    labeled[torch.arange(3, COUNT, 3)] = True
    probability = torch.rand(COUNT)
    trainer.train_epoch(0, 2, labeled, probability)
    indices, weights = seen[0]
    assert torch.equal(indices, labeled.nonzero().squeeze(1))
    assert torch.equal(weights, probability[indices])
    for batch_index, batch_weight in original(seen[0], 16, 0, 2, False):
        assert torch.equal(batch_weight, probability[batch_index])


@pytest.mark.parametrize(
    ("views", "lambda_u", "method", "expected"),
    [
        ("dividemix", 25.0, "dividemix", [16, 16, 16, 16, 16 * 4]),  # guesses on x1, x2, u1, u2; 4 views mixed
        ("ww_ws", 25.0, "lcbooster", [16, 16, 32, 16 * 2 + 32 * 2]),  # guesses on xw1, xw2, uw; (xw, xw, uw, us)
        ("wwss", 25.0, "lcbooster", [16, 16, 32, 32, 16 * 2 + 32 * 2]),  # guesses on weak, strong views mixed
        ("ww_ws", 0.0, "lcbooster", [16, 16, 32, 16 * 2]),  # λu = 0: the labelled rows only (SmoothCE)
        ("dividemix", 0.0, "dividemix", [16, 16, 16, 16, 16 * 4]),  # DivideMix mixes all, Lu weighted 0
    ],
)
def test_forward_rows_per_view_scheme(digits, views, lambda_u, method, expected):
    trainer = _trainer(digits, method, views=views, lambda_u=lambda_u, unlabeled_ratio=2 if views != "dividemix" else 1)
    core = trainer.cores[0]
    rows = []
    handle = core.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    labeled = torch.zeros(COUNT, dtype=torch.bool)
    labeled[:16] = True
    trainer.train_epoch(0, 2, labeled, torch.ones(COUNT))
    handle.remove()
    assert rows == expected


def test_no_unlabelled_samples_and_no_labelled_samples(digits):
    trainer = _trainer(digits, "lcbooster")
    everything = torch.ones(COUNT, dtype=torch.bool)
    stats = trainer.train_epoch(0, 2, everything, torch.ones(COUNT))
    assert stats["iterations"] == COUNT // 16 and stats["loss_u"] == 0.0
    assert trainer.train_epoch(0, 2, ~everything, torch.ones(COUNT))["iterations"] == 0


def test_unlabel_scope_corrects_samples_unlabelled_in_either_division(digits):
    """``--relabel-scope unlabel`` as the official code: ``~(mask1 & mask2)``, not ``~mask1 & ~mask2``."""
    trainer = _trainer(digits, "lcbooster", relabel_threshold=0.0, relabel_scope="unlabel")
    trainer.run_epoch(1)
    before = trainer.targets.clone()
    quarter = COUNT // 4
    first, second = torch.zeros(COUNT, dtype=torch.bool), torch.zeros(COUNT, dtype=torch.bool)
    first[: 2 * quarter] = True  # net 1 labels the first half
    second[:quarter] = second[2 * quarter : 3 * quarter] = True  # net 2 the first and third quarters
    result = trainer.correct_labels([first, second])
    assert result.count == COUNT - quarter  # all but the first quarter, labelled by both (both-unlabelled: 50)
    assert torch.equal(trainer.targets[:quarter], before[:quarter])


def test_correction_feeds_the_gmm_and_the_targets(digits):
    trainer = _trainer(digits, "lcbooster", relabel_threshold=0.0)
    trainer.run_epoch(1)
    result = trainer.correct_labels()
    assert result.count == COUNT  # τ = 0: every sample takes the ensemble's prediction
    assert torch.equal(trainer.targets, result.targets)
    with torch.no_grad():
        x = trainer.data.views.test(trainer.data.images)
        prediction = (trainer.cores[0](x) + trainer.cores[1](x)).argmax(1)
    assert torch.equal(trainer.targets, prediction)
    trainer.history = [[], []]
    trainer.clean_probability(0, 2)
    logits = trainer._gathered_logits(trainer.cores[0])
    expected = torch.nn.functional.cross_entropy(logits, prediction, reduction="none")
    low, high = expected.min(), expected.max()
    assert torch.allclose(trainer.history[0][-1], (expected - low) / (high - low), atol=1e-6)


def test_state_round_trip(digits):
    trainer = _trainer(digits, "lcbooster")
    trainer.run_epoch(1)
    trainer.run_epoch(2)
    state = trainer.state()
    other = _trainer(digits, "lcbooster", seed=1)
    other.load_state(state)
    assert torch.equal(other.targets, trainer.targets)
    assert other.test_history == trainer.test_history
    assert len(other.history[0]) == 1 and torch.equal(other.history[0][0], trainer.history[0][0])


def test_eval_bn_switch_keeps_running_stats_during_guessing(digits):
    for faithful in (True, False):
        trainer = _trainer(digits, "dividemix", faithful_bn_in_guess=faithful, lr=1e-12, momentum=0.0)
        core = trainer.cores[0]
        bn = next(m for m in core.modules() if isinstance(m, torch.nn.BatchNorm2d))
        guesses = []
        core.register_forward_pre_hook(
            lambda m, i, bn=bn, guesses=guesses: guesses.append(bn.num_batches_tracked.item())
        )
        labeled = torch.zeros(COUNT, dtype=torch.bool)
        labeled[:16] = True
        trainer.train_epoch(0, 2, labeled, torch.ones(COUNT))
        # forwards: 2 labelled guesses, 2 unlabelled guesses, then the mixed forward
        assert guesses[4] - guesses[0] == (4 if faithful else 0)


def test_config_dataclass_replace_keeps_validation_fields(digits):
    config = build_config("digits", "sym80", "lcbooster", "demo")
    assert dataclasses.replace(config, lambda_u=0.0).lambda_u == 0.0
    assert dataclasses.replace(config, epochs=50).relabel_epochs == config.relabel_epochs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["dividemix", "lcbooster"])
def test_cuda_epochs_with_fp16_match_the_cpu_bookkeeping(digits, method):
    """On CUDA with fp16 + AmpScaler: the phases run, images stay on the GPU, the correction runs."""
    trainer = _trainer(digits, method, strong_aug="digits")
    assert trainer.data.views.strong_aug == "digits"
    config = dataclasses.replace(trainer.config, amp=True)
    cuda = CoTrainer(config, trainer.cores, trainer.data, torch.device("cuda"), progress=False)
    assert cuda.data.images.is_cuda
    records = [cuda.run_epoch(epoch) for epoch in (1, 2, 3)]
    assert records[1]["phase"] == "cotrain" and 0 < records[1]["n_labeled_1"] < COUNT
    assert records[-1]["test_acc"] == cuda.evaluate()["test_acc"]
    assert ("relabel_overwritten" in records[2]) == (method == "lcbooster")
    assert cuda.scalers[0].enabled and cuda.state()["scalers"][0]["scale"] > 0


def test_the_strong_view_follows_the_configuration(digits):
    """--strong-aug reaches the views: digits (translate + Cutout + jitter) or none (a second weak view)."""
    plain, strong = _trainer(digits, strong_aug="none").data.views, _trainer(digits, strong_aug="digits").data.views
    assert (plain.strong_aug, plain.cutout, strong.strong_aug) == ("none", None, "digits")
    images = digits.x_train[:8]

    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    assert torch.equal(plain.strong(images, generator=seeded()), plain.weak(images, generator=seeded()))
    assert not torch.equal(strong.strong(images, generator=seeded()), plain.strong(images, generator=seeded()))


def test_labelled_set_after_the_correction_is_read_once_the_averaging_window_has_passed(tmp_path):
    """At 90% noise the GMM averages 5 epochs of losses: 'after' is the division of epoch c + 5, not c + 1."""
    config = build_config("digits", "sym90", "lcbooster", "demo")
    correction = {"relabel_overwritten": 9, "relabel_changed": 7, "relabel_accuracy": 1.0}
    correction |= {"label_accuracy_before": 0.2, "label_accuracy_after": 0.5}
    correction |= {"correct_per_class_before": [3, 4], "correct_per_class_after": [9, 4]}
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    for epoch in range(1, config.epochs + 1):
        record = {"epoch": epoch, "test_acc": 50.0, "best": 50.0, "last5": 50.0}
        record |= {"n_labeled_1": 10 * epoch, "n_labeled_2": 10 * epoch + 2}
        record |= {"labeled_precision_1": epoch / 100, "labeled_precision_2": epoch / 100}
        writer.write(record | (correction if epoch == 19 else {}))
    summary = summarise(config, tmp_path, 1.0)["correction"]
    assert (summary["epoch"], summary["settled_epoch"], summary["n_labeled_before"]) == (19, 24, 191)
    assert (summary["n_labeled_after"], summary["labeled_precision_after"]) == (241, pytest.approx(0.24))
    assert summary["correct_per_class_after"] == [9, 4]
