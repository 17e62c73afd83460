"""KF models: whole-model counts and the key layout of the official release, the loss dict and where its
gradients flow, the teacher's mode, factor networks and their assembly."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from knowfactor.backbones import SimpleGaussianConv64
from knowfactor.config import CONFIGS, Recipe, get_config
from knowfactor.engine import build_optimizer
from knowfactor.losses import KD_LOSSES, infomin_loss
from knowfactor.models import (
    GaussianTaskNet,
    KFModel,
    KFStudent,
    TaskSpecificNet,
    assemble,
    build_kd,
    build_kf,
    build_student,
    build_teacher,
    factor_network,
)
from shared.errors import UserError

LOSS_KEYS = {"loss_infomax", "loss_kd", "loss_cls", "loss_task", "loss_infomin"}
TINY = get_config("dsprites_tiny")


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_kf(task_classes=(3, 6), seed: int = 0, **overrides) -> KFModel:
    torch.manual_seed(seed)
    return build_kf(TINY, build_teacher(TINY, task_classes), task_classes, **overrides)


def images(batch: int = 8, seed: int = 1, size: int = 16) -> torch.Tensor:
    """Random 1-channel images; 16x16 unless the test needs the config's 32x32 (any size works: GAP)."""
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


def labels(task_classes=(3, 6), batch: int = 8, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, k, (batch,), generator=gen) for k in task_classes], dim=1)


def with_running_stats(student: KFStudent, x: torch.Tensor) -> KFStudent:
    """Non-trivial BatchNorm running statistics, then eval mode."""
    student.train()
    with torch.no_grad():
        student(x)
        student(x.flip(0) * 0.5 + 0.1)
    return student.eval()


# --- whole-model counts per official config ---------------------------------------------------------------------------

# teacher, CKN, TSN, head (= head_task), projectors, factor network at inference
COUNTS = {
    "cifar10_wrn28_2_to_r18": (1_468_058, 11_168_832, 1_343_040, 5_130, 433_664, 12_517_002),
    "cifar10_wrn28_2_to_mbv2": (1_468_058, 2_223_872, 2_326_080, 12_810, 1_962_880, 4_562_762),
    "cifar10_wrn28_2_to_wrn28_2": (1_468_058, 1_466_768, 851_520, 1_290, 43_904, 2_319_578),
    "imagenet_r18_to_r18": (11_689_512, 11_176_512, 1_343_040, 513_000, 691_712, 13_032_552),
    "imagenet_r18_to_mbv2": (11_689_512, 2_223_872, 2_326_080, 1_281_000, 2_531_200, 5_830_952),
    "imagenet_r50_to_r18": (25_557_032, 11_176_512, 1_343_040, 513_000, 1_723_904, 13_032_552),
}
# official key counts: CKN, TSN, teacher backbone
KEY_COUNTS = {
    "cifar10_wrn28_2_to_r18": (120, 313, 168),
    "cifar10_wrn28_2_to_mbv2": (312, 313, 168),
    "cifar10_wrn28_2_to_wrn28_2": (168, 313, 168),
    "imagenet_r18_to_r18": (120, 313, 120),
    "imagenet_r18_to_mbv2": (312, 313, 120),
    "imagenet_r50_to_r18": (120, 313, 318),
}


def paper_kf(name: str) -> KFModel:
    config = CONFIGS[name]
    classes = [10 if config.dataset == "cifar10" else 1000]
    with torch.device("meta"):
        return build_kf(config, build_teacher(config, classes), classes)


@pytest.mark.parametrize("name", list(COUNTS))
def test_whole_model_counts_equal_the_release(name):
    model = paper_kf(name)
    student = model.student
    counted = (
        n_params(model.teacher),
        n_params(student.CKN),
        n_params(student.TSN[0]),
        n_params(student.head),
        n_params(model.feat_fcs),
        n_params(factor_network(student, 0)),
    )
    assert counted == COUNTS[name]
    assert n_params(student.head_task) == COUNTS[name][3]
    # training optimises the student and projectors only
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == n_params(student) + n_params(model.feat_fcs)
    ckn_keys, tsn_keys, teacher_keys = KEY_COUNTS[name]
    assert len(student.CKN.state_dict()) == ckn_keys
    assert len(student.TSN[0].state_dict()) == tsn_keys
    assert len(model.teacher.backbone.state_dict()) == teacher_keys


# --- state_dict layout ------------------------------------------------------------------------------------------------


def test_kf_state_dict_has_the_official_layout():
    keys = paper_kf("cifar10_wrn28_2_to_r18").state_dict()
    shapes = {k: tuple(v.shape) for k, v in keys.items()}
    tops = {k.split(".")[0] + "." + k.split(".")[1] for k in keys}
    student_parts = {"student.CKN", "student.TSN", "student.head", "student.head_task"}
    assert tops == student_parts | {"teacher.backbone", "teacher.head", "feat_fcs.0", "feat_fcs.1", "feat_fcs.2"}
    assert not any(k.startswith(("student.neck", "teacher.neck")) for k in keys)
    # ResNet18_CIFAR CKN, MBv2 TSN encoder, bias-free TSN fc, mmcls heads, WRN teacher
    for key in (
        "student.CKN.conv1.weight",
        "student.CKN.layer4.1.bn2.running_var",
        "student.CKN.layer2.0.downsample.1.weight",
    ):
        assert key in keys
    assert "student.TSN.0.encoder.conv1.conv.weight" in keys and "student.TSN.0.encoder.conv2.bn.weight" in keys
    assert shapes["student.TSN.0.fc.weight"] == (512, 1280) and "student.TSN.0.fc.bias" not in keys
    assert shapes["student.head.fc.weight"] == (10, 512) and "student.head.fc.bias" in keys
    assert shapes["student.head_task.fc.weight"] == (10, 512) and "student.head_task.fc.bias" in keys
    assert shapes["teacher.head.fc.weight"] == (10, 128) and "teacher.backbone.bn1.weight" in keys
    assert sum(k.startswith("teacher.backbone.") for k in keys) == 168
    # projectors: Linear(t -> s), BN(s), ReLU, Linear(s -> s) at indices 0, 1, 3
    for level, (t, s) in enumerate([(32, 128), (64, 256), (128, 512)]):
        prefix = f"feat_fcs.{level}."
        assert sorted(k.removeprefix(prefix) for k in keys if k.startswith(prefix)) == [
            "0.bias",
            "0.weight",
            "1.bias",
            "1.num_batches_tracked",
            "1.running_mean",
            "1.running_var",
            "1.weight",
            "3.bias",
            "3.weight",
        ]
        assert shapes[prefix + "0.weight"] == (s, t) and shapes[prefix + "3.weight"] == (s, s)
    assert len(keys) == 120 + 313 + 2 + 2 + 168 + 2 + 3 * 9


def test_official_layout_state_dict_loads_strictly():
    config = get_config("cifar10_wrn28_2_to_wrn28_2")
    torch.manual_seed(0)
    model = build_kf(config, build_teacher(config, [10]), [10])
    gen = torch.Generator().manual_seed(5)
    official = {
        key: torch.randint(0, 100, value.shape, generator=gen, dtype=value.dtype)
        if not value.is_floating_point()
        else torch.rand(value.shape, generator=gen)
        for key, value in model.state_dict().items()
    }
    torch.manual_seed(1)
    fresh = build_kf(config, build_teacher(config, [10]), [10])
    result = fresh.load_state_dict(official, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[k], official[k]) for k in official)
    # a missing or an extra key is refused
    with pytest.raises(RuntimeError):
        fresh.load_state_dict({k: v for k, v in official.items() if k != "feat_fcs.1.3.weight"})
    with pytest.raises(RuntimeError):
        fresh.load_state_dict({**official, "student.neck.weight": torch.zeros(1)})


def test_multi_task_keys_use_head_fcs():
    keys = tiny_kf((3, 6, 40)).state_dict()
    for head in ("head", "head_task"):
        assert f"student.{head}.fc.weight" not in keys
        for i, k in enumerate((3, 6, 40)):
            assert keys[f"student.{head}.fcs.{i}.weight"].shape == (k, 64)
    assert {k.split(".")[2] for k in keys if k.startswith("student.TSN.")} == {"0", "1", "2"}
    assert keys["teacher.head.fcs.2.weight"].shape == (40, 64)


def test_student_needs_one_tsn_per_task():
    ckn = build_student(TINY, [3]).CKN
    tsn = build_student(TINY, [3]).TSN[0]
    with pytest.raises(ValueError, match="TSNs"):
        KFStudent(ckn, [tsn], 64, [3, 6])


# --- the loss dict and its gradients ----------------------------------------------------------------------------------


def test_forward_train_returns_the_five_official_terms_finite_and_in_range():
    model = tiny_kf((3, 6)).train()
    terms = model(images(16), labels(batch=16))
    assert set(terms) == LOSS_KEYS
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    # infomax: -(E_J - log E_M) with |E_J| <= 1/B and e^-1 <= B^2 E_M / (B + (B^2 - B)) <= e
    assert -1.1 < terms["loss_infomax"].item() < 1.1
    assert terms["loss_kd"].item() >= 0 and terms["loss_infomin"].item() >= 0
    # label-smoothed CE of random logits is near the sum of log K (two tasks, K = 3 and 6)
    for name in ("loss_cls", "loss_task"):
        assert 0.5 * (1.10 + 1.79) < terms[name].item() < 2.0 * (1.10 + 1.79)


def test_gradient_flows_to_student_and_projectors_only():
    model = tiny_kf((3, 6)).train()
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    loss = sum(model(images(), labels()).values())
    loss.backward()
    for name, param in model.named_parameters():
        if name.startswith("teacher."):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None, name
    assert all(p.grad.abs().sum() > 0 for p in model.feat_fcs.parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.student.CKN.parameters())
    # the default teacher runs in eval mode: its BatchNorm running stats do not move
    after = model.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], after[k]) for k in after)
    # the optimizer holds exactly the trainable tensors
    optimizer = build_optimizer(model, 0.1, Recipe())
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for n, p in model.named_parameters() if not n.startswith("teacher.")}


# which parts each term reaches: z_c levels feed the projector term, z_c + z_i the heads,
# z_i alone the task heads and the bottleneck
REACHES = {
    "loss_infomax": {"CKN", "feat_fcs"},
    "loss_kd": {"CKN", "TSN", "head"},
    "loss_cls": {"CKN", "TSN", "head"},
    "loss_task": {"TSN", "head_task"},
    "loss_infomin": {"TSN"},
}


@pytest.mark.parametrize("term", sorted(REACHES))
def test_each_term_reaches_only_its_parts(term):
    model = tiny_kf((3, 6)).train()
    parts = {
        "CKN": model.student.CKN,
        "TSN": model.student.TSN,
        "head": model.student.head,
        "head_task": model.student.head_task,
        "feat_fcs": model.feat_fcs,
    }
    value = model(images(), labels())[term]
    names = list(parts)
    params = [list(parts[n].parameters()) for n in names]
    grads = torch.autograd.grad(value, [p for group in params for p in group], allow_unused=True)
    reached, offset = set(), 0
    for name, group in zip(names, params, strict=True):
        chunk = grads[offset : offset + len(group)]
        offset += len(group)
        if any(g is not None and g.abs().sum() > 0 for g in chunk):
            reached.add(name)
    assert reached == REACHES[term]


# --- teacher mode -----------------------------------------------------------------------------------------------------


def _teacher_maps(model: KFModel, x: torch.Tensor) -> list[torch.Tensor]:
    seen = []
    handle = model.teacher.backbone.register_forward_hook(lambda module, args, out: seen.append(out))
    model(x, labels(batch=len(x)))
    handle.remove()
    assert len(seen) == 1
    return list(seen[0])


def test_teacher_is_frozen_and_in_eval_mode_by_default():
    model = tiny_kf()
    x = images()
    with torch.no_grad():  # give the teacher non-trivial running statistics first
        model.teacher.train()(x * 2 + 1)
    model.train()
    assert model.training and model.student.training and model.feat_fcs.training
    assert not any(m.training for m in model.teacher.modules())
    assert not any(p.requires_grad for p in model.teacher.parameters())
    expected = copy.deepcopy(model.teacher).eval().backbone(x)
    assert all(torch.equal(a, b) for a, b in zip(_teacher_maps(model, x), expected, strict=True))
    kd = build_kd(TINY, build_teacher(TINY, [3]), [3]).train()
    assert kd.student.training and not any(m.training for m in kd.teacher.modules())
    assert not any(p.requires_grad for p in kd.teacher.parameters())


def test_official_teacher_bn_uses_batch_statistics_while_training():
    model = tiny_kf(official_teacher_bn=True)
    x = images()
    with torch.no_grad():
        model.teacher.train()(x * 2 + 1)
    model.train()
    assert all(m.training for m in model.teacher.modules())
    batch_stats = copy.deepcopy(model.teacher).train().backbone(x)
    running = copy.deepcopy(model.teacher).eval().backbone(x)
    before = model.teacher.backbone.layer1[1].running_mean.clone()
    maps = _teacher_maps(model, x)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(maps, batch_stats, strict=True))
    assert not torch.allclose(maps[-1], running[-1], atol=1e-3)
    assert not torch.equal(before, model.teacher.backbone.layer1[1].running_mean)  # the release's stats drift
    assert not any(p.requires_grad for p in model.teacher.parameters())
    model.eval()
    assert not any(m.training for m in model.teacher.modules())


# --- training lowers the loss; several tasks work (the release crashes for N > 1) -------------------------------------


def test_a_few_kf_steps_lower_the_loss_with_two_tasks():
    model = tiny_kf((3, 6), seed=3)
    model.teacher.eval()
    x, y = images(8, seed=4, size=32), labels(batch=8, seed=5)
    optimizer = build_optimizer(model, 0.05, Recipe())
    model.train()
    history = []
    for _ in range(8):
        terms = model(x, y)
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in {**terms, "loss": loss}.items()})
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert history[-1]["loss_cls"] < history[0]["loss_cls"]
    assert history[-1]["loss_task"] < history[0]["loss_task"]
    assert history[-1]["loss_infomax"] < history[0]["loss_infomax"]


# --- factor networks and assembly -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def student() -> KFStudent:
    torch.manual_seed(7)
    return with_running_stats(build_student(TINY, [3, 6, 40]), images(16, seed=8))


def count_ckn_calls(ckn: nn.Module) -> tuple[list, object]:
    calls = []
    return calls, ckn.register_forward_hook(lambda module, args, out: calls.append(1))


def test_factor_networks_equal_the_student_outputs(student):
    x = images(6, seed=9)
    with torch.no_grad():
        joint = student(x)
        for task in range(3):
            alone = factor_network(student, task).eval()(x)
            assert torch.equal(alone, joint[task])
    with pytest.raises(UserError, match="out of range"):
        factor_network(student, 3)


@pytest.mark.parametrize(
    "subset", [s for r in (1, 2, 3) for s in itertools.combinations(range(3), r)] + [(2, 0), (1, 2, 0)]
)
def test_assembly_is_bit_identical_at_the_cost_of_one_ckn_forward(student, subset):
    x = images(6, seed=10)
    factors = [factor_network(student, i) for i in subset]
    with torch.no_grad():
        alone = [f(x) for f in factors]
        network = assemble(factors).eval()
        calls, handle = count_ckn_calls(network.CKN)
        outputs = network(x)
        handle.remove()
    assert len(calls) == 1
    assert len(outputs) == len(subset)
    for got, want, task in zip(outputs, alone, subset, strict=True):
        assert got.shape == (6, (3, 6, 40)[task])
        assert (got - want).abs().max() < 1e-5
        assert torch.equal(got, want)


def test_exported_factor_networks_load_alone_and_assemble(student):
    """A factor network saved on its own (state_dict) rebuilds from the config and assembles as before."""
    x = images(6, seed=11)
    loaded = []
    for task, classes in ((0, 3), (2, 40)):
        saved = copy.deepcopy(factor_network(student, task).state_dict())
        fresh = factor_network(build_student(TINY, [classes]), 0)
        fresh.load_state_dict(saved, strict=True)
        loaded.append(fresh.eval())
    assert all(k.split(".")[0] in ("CKN", "TSN", "head") for k in saved)
    with torch.no_grad():
        outputs = assemble(loaded)(x)
        reference = student(x)
    assert torch.equal(outputs[0], reference[0]) and torch.equal(outputs[1], reference[2])


def test_assemble_refuses_factors_of_different_factorizations(student):
    torch.manual_seed(99)
    other = with_running_stats(build_student(TINY, [3, 6, 40]), images(16, seed=8))
    with pytest.raises(UserError, match="another CKN"):
        assemble([factor_network(student, 0), factor_network(other, 1)])
    # one changed running statistic is enough to refuse
    nudged = copy.deepcopy(student)
    nudged.CKN.layer3[4].running_var[0] += 1e-3
    with pytest.raises(UserError, match="factor network 1"):
        assemble([factor_network(student, 0), factor_network(nudged, 1)])
    wider = build_student(get_config("digits_tiny"), [3])
    with pytest.raises(UserError):
        assemble([factor_network(student, 0), factor_network(wider, 0)])
    with pytest.raises(UserError, match="at least one"):
        assemble([])


def test_learning_rate_policies():
    from knowfactor.engine import scheduled_lr

    assert [scheduled_lr(e, 0.1, 200, (100, 150)) for e in (0, 99, 100, 150)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert scheduled_lr(0, 0.1, 150, (), cosine=True) == pytest.approx(0.1)
    assert scheduled_lr(75, 0.1, 150, (), cosine=True) == pytest.approx(0.05)
    assert get_config("imagenet_r18_to_r18").recipe.cosine and not get_config("cifar10_wrn28_2_to_r18").recipe.cosine


# --- the release's disentanglement recipe: per-sample variational TSNs --------------------------------------------


def test_dsprites_simplecnn_uses_gaussian_tsns_with_the_official_counts_and_losses():
    config = get_config("dsprites_simplecnn")
    model = build_kf(config, build_teacher(config, [3, 6]), [3, 6])
    tsn = model.student.TSN[0]
    assert isinstance(tsn, GaussianTaskNet) and isinstance(tsn.encoder, SimpleGaussianConv64)
    assert n_params(model.student.CKN) == 1_756_938 and n_params(tsn) == 1_759_508
    assert n_params(model.teacher.backbone) == 1_756_938
    assert "TSN.1.encoder.main.13.weight" in model.student.state_dict()
    assert model.kd_loss is KD_LOSSES["logits"] and model.label_smoothing == 0.0
    assert isinstance(build_optimizer(model, 1e-4, config.recipe), torch.optim.Adam)


def test_gaussian_tsn_feeds_sampled_z_in_training_and_mu_in_evaluation():
    config = get_config("dsprites_simplecnn_tiny")
    torch.manual_seed(0)
    model = build_kf(config, build_teacher(config, [3, 6]), [3, 6])
    x, y = images(size=64), labels()
    tsn = model.student.TSN[0].train()
    z, mu, logvar = tsn.bottleneck(x)
    assert z.shape == mu.shape == logvar.shape == (8, 10) and not torch.equal(z, mu)
    assert not torch.equal(tsn(x), tsn(x))  # a new sample each call
    tsn.eval()
    assert torch.equal(tsn(x), mu) and torch.equal(tsn(x), tsn(x))
    # the bottleneck term: beta x the release's per-sample InfoMin_loss (KL summed over d, mean over the batch)
    model.train()
    with torch.no_grad():
        expected = sum(infomin_loss(*t.encoder(x)[1:]) for t in model.student.TSN)
        terms = model(x, y)
    assert torch.allclose(terms["loss_infomin"], 1e-3 * expected)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
    assert torch.allclose(infomin_loss(mu, logvar), kl)
    # the distillation term: the release's Logits loss, the MSE of the logits
    assert torch.equal(KD_LOSSES["logits"](mu, logvar, 10.0), torch.nn.functional.mse_loss(mu, logvar))


def test_moment_bottleneck_uses_the_batch_gaussian_of_a_deterministic_tsn():
    config = get_config("dsprites_simplecnn_tiny_moment")
    torch.manual_seed(0)
    model = build_kf(config, build_teacher(config, [3]), [3]).train()
    x = images(size=64)
    tsn = model.student.TSN[0]
    z, mu, logvar = tsn.bottleneck(x)
    assert isinstance(tsn, TaskSpecificNet) and torch.equal(z, tsn(x))
    assert torch.allclose(mu, z.mean(0)) and torch.allclose(logvar, z.var(0).log())
