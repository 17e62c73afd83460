"""Training and evaluation of the model bank: one SlimDA iteration step by step, and the whole run.

Per iteration (Fig. 2 of Slimmable Domain Adaptation, CVPR 2022): a source batch and a target batch; n
architectures by the sandwich rule; a no-grad ensemble pass giving SEED's teacher p̄(x_t); then per architecture
a forward of both batches and a backward of L_C + L_G + β·L_seed whose gradients are *routed* (L_C and L_G as
SymNets' ``symnets/trainer.py`` routes them; L_seed into Ca as Fig. 2 shows, and into the backbone: unverified):

- the backbone G receives ∇(L_G + β·L_seed) only,
- Cs ⊕ Ct (``heads.fc``) receives ∇L_C only,
- Ca (``heads.fc_aux``) receives ∇(β·L_seed) only (+ γ·CE on source if asked).

Routing is done in the graph: L_C reads detached features, L_G reads detached head weights; one backward per
architecture then accumulates exactly the routed gradients, and one optimizer step follows.

An optional source-CE warm-up (``warmup_fraction``, used by the from-scratch embedded presets) precedes the
adaptation and stands in for the ImageNet-pretrained start SymNets fine-tunes from; the λ_p and lr schedules
then run over the adaptation iterations.

:func:`fit` runs a whole configuration and owns its files (``config.json``, ``metrics.jsonl``,
``checkpoint-<iteration>.pt``, ``final.pt``, ``results.json``, with SEED ``teacher.json``) and ``--resume``;
:func:`load_bank` reads a ``final.pt`` (or a checkpoint) back and :func:`evaluate_file` scores one of its
architectures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shared import checkpoint, distributed
from shared.device import AmpScaler, autocast, seed_everything
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, Progress, format_record, get_logger
from slimda import data as sdata
from slimda.augment import Pipeline
from slimda.bn import recalibrate_bn
from slimda.config import EMBEDDED, HEADS, TrainConfig
from slimda.flops import count_macs, count_params
from slimda.losses import (
    ensemble_target,
    lambda_schedule,
    lr_schedule,
    seed_loss,
    symnets_classifier_loss,
    symnets_feature_loss,
)
from slimda.models import Arch, HeadOutputs, ModelBank, knowledge, load_torchvision_weights
from slimda.sampling import ArchSampler

#: The SEED teacher's target accuracy at the first adaptation step (:meth:`Trainer.teacher_accuracy`).
TEACHER_FILE = "teacher.json"


class BatchStream:
    """Batches of indices over ``n`` items, reshuffled every pass, as a pure function of the step.

    Pass e uses the permutation drawn from ``seed + e``; each process takes its own slice of the global batch.
    A resumed run therefore reads exactly the batches of the uninterrupted run, with no iterator state.
    """

    def __init__(self, n: int, batch_size: int, seed: int, name: str) -> None:
        self.world, self.rank = distributed.get_world_size(), distributed.get_rank()
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_pass = n // (batch_size * self.world)
        if self.per_pass == 0:
            raise UserError(
                f"the {name} domain has {n} images, fewer than one batch of {batch_size} x {self.world} "
                "process(es): lower --batch-size"
            )
        self._cached: tuple[int, torch.Tensor] | None = None

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.per_pass)
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._cached = (epoch, torch.randperm(self.n, generator=generator))
        start = (position * self.world + self.rank) * self.batch_size
        return self._cached[1][start : start + self.batch_size]


@dataclasses.dataclass
class StepLosses:
    """The per-architecture objectives of one iteration (tensors, before the backward)."""

    classifier: torch.Tensor  # L_C
    feature: torch.Tensor  # L_G
    seed: torch.Tensor  # L_seed
    total: torch.Tensor


def step_losses(
    bank: ModelBank,
    config: TrainConfig,
    x_source: torch.Tensor,
    y_source: torch.Tensor,
    x_target: torch.Tensor,
    lam: float,
    teacher: torch.Tensor | None,
    warmup: bool = False,
) -> StepLosses:
    """L_C, L_G, L_seed of the current architecture, wired for the gradient routing (module docstring).

    ``teacher`` is p̄ on the target batch (on source + target with ``seed_on_source``), or None without SEED.
    Source only (and any method during ``warmup``) reads the source batch alone: source CE on Cs (on every
    head during a warm-up, which stands in for the pretrained start SymNets fine-tunes from).
    """
    fc, k, b = bank.heads.fc, bank.num_classes, x_source.shape[0]
    if warmup or config.method == "source-only":
        features = bank.backbone(x_source)
        z = fc(features)
        loss = F.cross_entropy(z[:, :k], y_source)
        if warmup and config.method != "source-only":
            loss = loss + F.cross_entropy(z[:, k:], y_source) + F.cross_entropy(bank.heads.fc_aux(features), y_source)
        zero = loss.new_zeros(())
        return StepLosses(loss, zero, zero, loss)
    if config.bn_forward == "separate":  # each domain normalised by its own batch statistics, as SymNets does
        features = torch.cat([bank.backbone(x_source), bank.backbone(x_target)])
    else:
        features = bank.backbone(torch.cat([x_source, x_target]))
    z_c = fc(features.detach())  # Cs ⊕ Ct see only L_C
    l_c = symnets_classifier_loss(z_c[:b], y_source, z_c[b:])
    z_g = F.linear(features, fc.weight[:, : features.shape[1]].detach(), fc.bias.detach())  # G sees only L_G
    l_g = symnets_feature_loss(z_g[:b], y_source, z_g[b:], lam, config.entropy_min)
    total = l_c + l_g
    l_seed = features.new_zeros(())
    if teacher is not None:
        student = features if config.seed_on_source else features[b:]
        if config.seed_detach_features:  # attribution control: SEED reaches its head only
            student = student.detach()
        logits = bank.heads.fc_aux(student) if config.ostc else fc(student)[:, k:]
        l_seed = seed_loss(teacher, logits, config.seed_temperature)
        total = total + seed_weight(config, lam) * l_seed
    if config.ostc and config.aux_source_ce > 0:  # optional γ·CE on Ca, Ca only
        total = total + config.aux_source_ce * F.cross_entropy(bank.heads.fc_aux(features[:b].detach()), y_source)
    return StepLosses(l_c, l_g, l_seed, total)


def seed_weight(config: TrainConfig, lam: float) -> float:
    """β, or β·λ_p with ``seed_ramp="lambda"`` (SymNets ramps its target terms so; 0 when adaptation starts)."""
    return config.seed_weight * (lam if config.seed_ramp == "lambda" else 1.0)


def make_optimizer(bank: ModelBank, config: TrainConfig) -> torch.optim.SGD:
    """SymNets' SGD: two parameter groups, the backbone at ``backbone_lr_mult`` × the heads' rate."""
    groups = [
        {"params": bank.backbone_parameters(), "lr_mult": config.backbone_lr_mult},
        {"params": bank.head_parameters(), "lr_mult": 1.0},
    ]
    return torch.optim.SGD(
        groups,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


def average_gradients(parameters: list[nn.Parameter]) -> None:
    """Mean of every gradient over the processes, in one flat all-reduce (the DDP step)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = distributed.all_reduce_mean(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


class Trainer:
    """Trains a :class:`ModelBank` on a labelled source and an unlabelled target domain (uint8 image tensors)."""

    def __init__(
        self,
        config: TrainConfig,
        bank: ModelBank,
        source_images: torch.Tensor,
        source_labels: torch.Tensor,
        target_images: torch.Tensor,
        device: torch.device,
        seed: int = 0,
        amp: bool = False,
    ) -> None:
        self.config, self.bank, self.device, self.seed = config, bank.to(device), device, seed
        self.source_images, self.source_labels = source_images.to(device), source_labels.to(device)
        self.target_images = target_images.to(device)
        self.pipeline = Pipeline(config.crop, config.flip)
        self.sampler = ArchSampler(
            bank.num_groups, config.grid, config.archs_per_iter, config.train_space, config.sandwich, seed
        )
        self.source_stream = BatchStream(len(source_images), config.batch_size, seed, "source")
        self.target_stream = BatchStream(len(target_images), config.batch_size, seed + 1, "target")
        self.optimizer = make_optimizer(bank, config)
        self.amp = amp
        self.scaler = AmpScaler(device, amp)

    def batches(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 1024 + distributed.get_rank())
        src = self.source_stream.indices(step).to(self.device)
        tgt = self.target_stream.indices(step).to(self.device)
        x_s = self.pipeline.train(self.source_images[src], generator)
        x_t = self.pipeline.train(self.target_images[tgt], generator)
        return x_s, self.source_labels[src], x_t

    @torch.no_grad()
    def teacher(self, archs: list[Arch], x_source: torch.Tensor, x_target: torch.Tensor) -> torch.Tensor:
        """SEED's p̄ = mean of π_a over the sampled architectures, on the target batch (source + target with
        ``seed_on_source``), no gradient.

        Each architecture reads its batches as its training forward does (``bn_forward``): with ``joint`` the
        source + target batch in one forward, with ``separate`` each domain in its own, so batch norm normalises
        the teacher's and the student's features alike.
        """
        config, predictions = self.config, []
        for arch in archs:
            net = self.bank.set_arch(arch)
            with autocast(self.device, enabled=self.amp):
                if config.bn_forward == "separate":
                    parts = [x_source, x_target] if config.seed_on_source else [x_target]
                    pis = [knowledge(net(x), config.seed_source_head) for x in parts]
                    pi = torch.cat(pis)
                else:
                    start = 0 if config.seed_on_source else len(x_source)
                    pi = knowledge(net(torch.cat([x_source, x_target])), config.seed_source_head)[start:]
            predictions.append(pi.float())
        return ensemble_target(predictions, config.seed_temperature)

    @torch.no_grad()
    def teacher_accuracy(self, step: int, labels: torch.Tensor) -> float:
        """Accuracy (%) of SEED's teacher p̄ on the target images at ``step``, in the regime it trains in: the step's
        architectures, train-mode batch norm, target batches read as the training forward reads them
        (``bn_forward``; with ``joint`` beside the step's source batch). A diagnostic: the labels reach no loss,
        and the BN buffers are restored, so the run is unchanged. Full batches of a fixed permutation only."""
        buffers = [(b, b.clone()) for b in self.bank.buffers()]
        x_s, _, _ = self.batches(step)
        archs = self.sampler.sample(step)
        size = self.config.batch_size
        order = torch.randperm(len(self.target_images), generator=torch.Generator().manual_seed(0))
        order = order[: len(order) // size * size].split(size)
        self.bank.train()
        correct = 0
        for chunk in order:
            teacher = self.teacher(archs, x_s, self.pipeline.test(self.target_images[chunk.to(self.device)]))
            correct += int((teacher[-len(chunk) :].argmax(dim=1).cpu() == labels[chunk]).sum())
        for buffer, saved in buffers:
            buffer.copy_(saved)
        return 100.0 * correct / (len(order) * size)

    def step(self, step: int) -> dict[str, float]:
        """One iteration; returns the losses averaged over the sampled architectures."""
        config = self.config
        warmup = step < config.warmup_iterations
        progress = 0.0 if warmup else (step - config.warmup_iterations) / (config.iterations - config.warmup_iterations)
        lam = lambda_schedule(progress)
        for group in self.optimizer.param_groups:  # the warm-up trains every layer at the heads' rate
            group["lr"] = lr_schedule(progress, config.lr) * (1.0 if warmup else group["lr_mult"])
        x_s, y_s, x_t = self.batches(step)
        archs = self.sampler.sample(step)
        self.bank.train()
        teacher = None
        if config.uses_seed and not warmup:
            teacher = self.teacher(archs, x_s, x_t)
        sums = {"loss_c": 0.0, "loss_g": 0.0, "loss_seed": 0.0}
        self.optimizer.zero_grad(set_to_none=True)
        for arch in archs:
            self.bank.set_arch(arch)
            with autocast(self.device, enabled=self.amp):
                losses = step_losses(self.bank, config, x_s, y_s, x_t, lam, teacher, warmup)
            self.scaler.backward(losses.total)
            sums["loss_c"] += float(losses.classifier.detach())
            sums["loss_g"] += float(losses.feature.detach())
            sums["loss_seed"] += float(losses.seed.detach())
        if distributed.is_distributed():
            average_gradients(list(self.bank.parameters()))
        self.scaler.step(self.optimizer)
        return {k: v / len(archs) for k, v in sums.items()} | {
            "lambda": lam,
            "lr": self.optimizer.param_groups[1]["lr"],
        }


class Evaluator:
    """Per-architecture outputs on a labelled (or unlabelled) image set, after BN recalibration.

    Calibration batches are the first ``calib_batches`` batches of a fixed permutation of ``calib_images``:
    the same for every architecture, so evaluation is deterministic.
    """

    def __init__(
        self,
        bank: ModelBank,
        pipeline: Pipeline,
        calib_images: torch.Tensor,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        device: torch.device,
        calib_batches: int = 50,
        batch_size: int = 64,
    ) -> None:
        self.bank, self.pipeline, self.device, self.batch_size = bank, pipeline, device, batch_size
        order = torch.randperm(len(calib_images), generator=torch.Generator().manual_seed(0))
        self.calib_images = calib_images[order[: calib_batches * batch_size]]
        self.images = images
        self.labels = None if labels is None else labels.cpu()

    def _chunks(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        for start in range(0, len(images), self.batch_size):
            yield self.pipeline.test(images[start : start + self.batch_size].to(self.device))

    @torch.no_grad()
    def outputs(self, arch: Arch) -> HeadOutputs:
        """Recalibrate BN for ``arch`` and return its head outputs on every image (on the CPU, float32)."""
        recalibrate_bn(self.bank, arch, self._chunks(self.calib_images))
        parts = [self.bank(batch) for batch in self._chunks(self.images)]
        return HeadOutputs(*(torch.cat([getattr(p, f) for p in parts]).float().cpu() for f in HeadOutputs._fields))

    def accuracy(self, outputs: HeadOutputs) -> dict[str, float]:
        """Accuracy in % of every head: Cs, Ct, Ca and the folded Cs ⊕ Ct."""
        if self.labels is None:
            raise UserError("accuracy needs labelled images")
        return {
            head: 100.0 * float((getattr(outputs, head).argmax(dim=1) == self.labels).float().mean())
            for head in ("cs", "ct", "ca", "folded")
        }


def load_domains(config: TrainConfig) -> tuple[sdata.Domain, sdata.Domain]:
    """The (source, target) domains of ``config``: an embedded shift, or two domains of a real dataset."""
    data, source, target = config.data, config.source, config.target
    if data is None:
        if config.dataset not in EMBEDDED:
            raise UserError(f"--dataset {config.dataset} needs --data (its domain folders); nothing is downloaded")
        if source or target:
            raise UserError("--source/--target name domains under --data; the embedded datasets fix theirs")
        data = sdata.embedded_root(config.dataset)
        source, target = sdata.EMBEDDED_DOMAINS[config.dataset]
    elif not (source and target):
        raise UserError("--data needs --source and --target (the domain names under it)")
    root = require_path(data, "--data", kind="dir")
    size, list_dir = config.image_size, config.list_dir
    domains = sdata.load_domain(root, source, size, list_dir), sdata.load_domain(root, target, size, list_dir)
    sdata.check_same_classes(*domains)
    return domains


def calibration_images(config: TrainConfig, source: sdata.Domain, target: sdata.Domain) -> torch.Tensor:
    """Images of the BN recalibration (``bn_calib_domain``; target by default, AdaBN-style)."""
    if config.bn_calib_domain == "both":
        return torch.cat([source.images, target.images])
    return (source if config.bn_calib_domain == "source" else target).images


def make_evaluator(
    bank: ModelBank,
    config: TrainConfig,
    source: sdata.Domain,
    target: sdata.Domain,
    device: torch.device,
    max_images: int | None = None,
) -> Evaluator:
    """Accuracy on the target images (the transductive UDA protocol), BN recalibrated per architecture.

    ``max_images`` scores a fixed random subset of the target (calibration still reads every domain image).
    """
    images, labels = target.images, target.labels
    if max_images is not None and max_images < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:max_images]
        images, labels = images[keep], labels[keep]
    return Evaluator(
        bank,
        Pipeline(config.crop, config.flip),
        calibration_images(config, source, target),
        images,
        labels,
        device,
        config.bn_calib_batches,
    )


def bank_widths(config: TrainConfig) -> list[float]:
    """The uniform widths of the bank, largest first (the rows of the per-width tables)."""
    return sorted(config.grid, reverse=True)


def evaluate_widths(evaluator: Evaluator, bank: ModelBank, widths: Sequence[float]) -> dict[str, dict[str, float]]:
    """Accuracy of every head at each uniform width, keyed by the width (``"0.5"``)."""
    return {f"{w:g}": evaluator.accuracy(evaluator.outputs(Arch.uniform(w, bank.num_groups))) for w in widths}


def fit(
    config: TrainConfig,
    out: Path,
    device: torch.device,
    *,
    resume: bool = False,
    domains: tuple[sdata.Domain, sdata.Domain] | None = None,
    info: dict | None = None,
    quiet: bool = False,
    progress: str | None = "slimda-train",
) -> dict:
    """Train the bank of ``config`` into ``out`` and return the results (also written to ``results.json``).

    ``resume`` continues from the latest checkpoint in ``out`` with the result of an uninterrupted run (batches,
    augmentations and architecture draws are functions of the iteration). ``domains`` (default:
    :func:`load_domains`) lets several runs share data read once; ``info`` is recorded in ``config.json`` (e.g. the
    preset's name); ``progress`` labels the progress bar (None: no bar).
    """
    log = get_logger()
    source, target = domains or load_domains(config)
    seed_everything(config.seed)
    bank = ModelBank(config.backbone, source.num_classes)
    if config.weights is not None and not resume:
        load_torchvision_weights(bank, require_path(config.weights, "--weights", kind="file"))
    trainer = Trainer(config, bank, source.images, source.labels, target.images, device, config.seed, config.amp)
    evaluator = make_evaluator(bank, config, source, target, device)
    run = {"num_classes": source.num_classes, "classes": source.classes, "source": source.name, "target": target.name}
    start = 0
    if resume:
        latest = checkpoint.resume_checkpoint(out)
        saved = checkpoint.load_checkpoint(latest)
        start = checkpoint.restore_training_state(saved, bank, trainer.optimizer, scaler=trainer.scaler)["step"]
    elif distributed.is_main_process():
        (out / TEACHER_FILE).unlink(missing_ok=True)
        checkpoint.save_json(out / "config.json", {"train_config": dataclasses.asdict(config), **run, **(info or {})})
    if not quiet:
        log.info(
            f"slimda-train: {config.method} on {config.dataset} {source.name} ({len(source.labels)}) -> "
            f"{target.name} ({len(target.labels)}), {config.backbone}, {config.iterations} iterations -> {out}"
        )
    metrics = MetricsWriter(out / "metrics.jsonl")
    metrics.rewind("iteration", start)
    smallest = Arch.uniform(min(config.grid), bank.num_groups)
    running: dict[str, float] = {}
    last_record = start
    started = time.monotonic()
    steps = range(start, config.iterations)
    bar = Progress(steps, desc=progress or "", enabled=progress is not None)
    for it in bar:
        if it == config.warmup_iterations and config.uses_seed:
            teacher = {"iteration": it, "accuracy": trainer.teacher_accuracy(it, target.labels)}
            if distributed.is_main_process():
                checkpoint.save_json(out / TEACHER_FILE, teacher)
            if not quiet:
                accuracy = teacher["accuracy"]
                log.info(f"SEED teacher at its first step: {accuracy:.2f}% of the target ({config.bn_forward})")
        for key, value in trainer.step(it).items():
            running[key] = running.get(key, 0.0) + value
        done = it + 1
        if done % config.log_every and done % config.eval_every and done != config.iterations:
            continue
        record = {"iteration": done, **{k: v / (done - last_record) for k, v in running.items()}}
        running, last_record = {}, done
        if done % config.eval_every == 0 or done == config.iterations:
            for name, arch in (("largest", bank.full_arch()), ("smallest", smallest)):
                record[f"acc_{name}"] = evaluator.accuracy(evaluator.outputs(arch))[config.head]
            state = checkpoint.training_state(bank, trainer.optimizer, scaler=trainer.scaler, step=done)
            checkpoint.save_training_checkpoint(out, done, state)
        metrics.write(record)
        bar.update(**{k: v for k, v in record.items() if k.startswith(("loss", "acc"))})
        if not quiet:
            log.info(format_record(record))
    results = {
        "method": config.method,
        "dataset": config.dataset,
        "source": source.name,
        "target": target.name,
        "head": config.head,
        "accuracy": evaluate_widths(evaluator, bank, bank_widths(config)),
        "train_seconds": round(time.monotonic() - started, 1),
    }
    if (out / TEACHER_FILE).is_file():
        results["teacher_accuracy"] = json.loads((out / TEACHER_FILE).read_text())["accuracy"]
    if distributed.is_main_process():
        final = {"model": bank.state_dict(), "config": dataclasses.asdict(config), **run}
        checkpoint.save_checkpoint(out / "final.pt", final)
        checkpoint.save_json(out / "results.json", results)
    return results


def load_bank(path: str | os.PathLike) -> tuple[ModelBank, TrainConfig, dict]:
    """The bank of a ``final.pt`` (or of a ``checkpoint-<iteration>.pt`` beside its run's ``config.json``), its
    configuration, and what the run recorded (``num_classes``, ``classes``, ``source``, ``target``)."""
    path = Path(path)
    saved = checkpoint.load_checkpoint(require_path(path, "--weights", kind="file"))
    if "config" in saved and "model" in saved:
        meta = saved
    elif "model" in saved and (path.parent / "config.json").is_file():
        recorded = json.loads((path.parent / "config.json").read_text())
        meta = {"model": saved["model"], "config": recorded["train_config"]}
        meta |= {key: recorded[key] for key in ("num_classes", "classes", "source", "target")}
    else:
        raise UserError(f"{path} is not a file written by slimda-train (final.pt or checkpoint-<iteration>.pt)")
    config = TrainConfig(**{**meta["config"], "grid": tuple(meta["config"]["grid"])})
    bank = ModelBank(config.backbone, meta["num_classes"])
    try:
        bank.load_state_dict(meta["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"{path} does not fit a {config.backbone} bank ({first})") from None
    return bank, config, {key: value for key, value in meta.items() if key not in ("model", "config")}


def domains_of_run(
    config: TrainConfig, meta: dict, data: str | os.PathLike | None = None
) -> tuple[sdata.Domain, sdata.Domain]:
    """The run's source and target domains; ``data`` points at where a real dataset now lives."""
    if data is None:
        return load_domains(config)
    return load_domains(dataclasses.replace(config, data=str(data), source=meta["source"], target=meta["target"]))


def evaluate_file(
    weights: str | os.PathLike,
    device: torch.device,
    *,
    arch: str = "1",
    head: str = "auto",
    bn_calib_batches: int | None = None,
    data: str | os.PathLike | None = None,
) -> dict:
    """Target accuracy (every head), MACs and parameters of one architecture of a saved bank, BN recalibrated."""
    if head not in HEADS:
        raise UserError(f"unknown head {head!r}: choose from {HEADS}")
    bank, config, meta = load_bank(weights)
    config = dataclasses.replace(
        config,
        eval_head=head if head != "auto" else config.eval_head,
        bn_calib_batches=bn_calib_batches or config.bn_calib_batches,
    )
    chosen = bank.parse_arch(arch)
    source, target = domains_of_run(config, meta, data)
    evaluator = make_evaluator(bank.to(device), config, source, target, device)
    accuracy = evaluator.accuracy(evaluator.outputs(chosen))
    macs = count_macs(bank, chosen, config.crop)
    return {
        "arch": str(chosen),
        "head": config.head,
        "accuracy": accuracy[config.head],
        "accuracy_by_head": accuracy,
        "macs": macs,
        "macs_fraction": macs / count_macs(bank, bank.full_arch(), config.crop),
        "params": count_params(bank, chosen),
    }
