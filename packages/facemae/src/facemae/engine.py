"""FaceMAE's algorithm: train the MAE with IRM, release reconstructions, train recognition, measure leakage.

The four stages of Wang, Zhao et al., "FaceMAE: Privacy-Preserving Face Recognition via Masked Autoencoders"
(arXiv 2205.11090), whose code is not public:

- :func:`fit` of an :class:`~facemae.config.MAEConfig` (stage A): an MAE (facebookresearch/mae
  ``main_pretrain.py``: AdamW, per-iteration warm-up and half-cycle cosine of ``util/lr_sched.py``, no weight
  decay on biases and norms) on randomly masked source faces, plus ``lambda_irm`` x IRM between the
  originals and their reconstructions through a frozen face encoder phi, trained first on the source
  originals (``phi/`` in the run folder) unless ``irm_weights`` names one. Batches come from an
  :class:`~facemae.data.IdentityBalancedSampler`.
- :func:`reconstruct_dataset` (stage B): every face of the target set masked with its own seeded mask,
  reconstructed, written as identity folders or a RecordIO pack with the identity labels, and a private
  manifest (source index, view, mask seed) kept apart from the release; baselines (``original``,
  ``masked``, ``blur``, ``pixelate``, ``noise``) are released the same way.
- :func:`fit` of an :class:`~facemae.config.FRConfig` (stage C): IResNet + margin softmax (insightface
  ``arcface_torch``: SGD, step decay, random horizontal flip) with 10-fold verification on ``.bin`` pairs.
- :func:`privacy_report` (stage D): retrieval of each released face among the originals by an attacker's
  embeddings (instance and identity leak@k), with PSNR and SSIM of the released faces.

:func:`fit` owns a run's files: ``config.json``, ``metrics.jsonl`` (one record per epoch), ``checkpoint-<epoch>.pt``
(model, optimizer, scheduler, AMP scaler and RNG, so ``resume`` gives the result of an uninterrupted run),
``final.pt`` (the weights and the configuration that rebuilds them) and ``results.json``. Without ``data`` the
runs use the synthetic faces written once under the user's cache.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from facemae.config import FRConfig, MAEConfig, TrainConfig, phi_config, plain
from facemae.data import (
    IdentityBalancedSampler,
    RecordIOReader,
    RecordIOWriter,
    VerificationPairs,
    decode_image,
    denormalize_faces,
    encode_image,
    normalize_faces,
    open_faces,
    read_verification_bin,
    unpack_payload,
)
from facemae.losses import irm_loss
from facemae.metrics import gaussian_window, leak_rates, psnr, ssim, verification_accuracy
from facemae.models import IRESNET_CONFIGS, MAE_CONFIGS, IResNet, MarginHead, MaskedAutoencoderViT
from facemae.synthetic import SyntheticSplit, write_synthetic_faces
from shared import checkpoint, distributed
from shared.data import cache_dir, make_loader, set_epoch
from shared.device import AmpScaler, autocast, seed_everything
from shared.errors import UserError
from shared.logging import MetricsWriter, format_record, get_logger

RELEASES = ("mae", "original", "masked", "blur", "pixelate", "noise")
#: Baseline strengths at 112x112 (scaled to the face size): blur sigma in pixels, pixelation factor, noise sigma.
BLUR_SIGMA, PIXELATE_FACTOR, NOISE_SIGMA = 4.0, 8, 0.2
EMBED_BATCH = 256


# --- data --------------------------------------------------------------------------------------------------------


def synthetic_split(face_size: int) -> SyntheticSplit:
    """The default synthetic faces at ``face_size`` (written once under the cache)."""
    return write_synthetic_faces(cache_dir("facemae", f"synthetic-faces-{face_size}"), size=face_size)


def training_faces(data: Path | None, face_size: int, part: str) -> Dataset:
    """The faces at ``data``, or the synthetic ``part`` (``source`` or ``target``) without it."""
    if data is None:
        split = synthetic_split(face_size)
        data = split.source_folder if part == "source" else split.target_folder
    return open_faces(data, face_size)


def read_faces(faces: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Every face of a set as uint8 (N, 3, H, W) and its identities (N,)."""
    items = [faces[i] for i in range(len(faces))]
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])


def identity_names(faces: Dataset) -> list[str]:
    """Folder names of a set's identities (``id00000``... for a RecordIO pack)."""
    classes = getattr(faces, "classes", None)
    return list(classes) if classes else [f"id{c:05d}" for c in range(faces.num_classes)]


def num_identities(faces: Dataset) -> int:
    return len(faces.classes) if hasattr(faces, "classes") else faces.num_classes


def verification_sets(paths: Sequence[Path], face_size: int, data: Path | None) -> list[VerificationPairs]:
    """The verification ``.bin`` files at ``paths``; without any, the synthetic pairs for the synthetic faces
    (``data`` None) and nothing for real faces (with a warning: the run's utility is then unmeasured)."""
    if not paths and data is None:
        paths = [synthetic_split(face_size).pairs]
    elif not paths:
        get_logger().warning(f"no verification pairs given for {data}: pass --val lfw.bin,... to measure accuracy")
    return [read_verification_bin(path, face_size) for path in paths]


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize (antialiased when shrinking) to ``size`` x ``size``; unchanged at that size."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)


# --- models ------------------------------------------------------------------------------------------------------


def build_mae(config: MAEConfig) -> MaskedAutoencoderViT:
    """The configuration's MAE, from ``config.weights`` (official ``models_mae.py`` keys) when given."""
    mae = MaskedAutoencoderViT(**MAE_CONFIGS[config.model], loss_on=config.loss_on)
    if config.weights is not None:
        state = checkpoint.unwrap_state_dict(checkpoint.load_checkpoint(config.weights), source=str(config.weights))
        _load_state(mae, state, config.weights, config.model)
    return mae


def build_recognizer(network: str, face_size: int) -> IResNet:
    return IResNet(**{**IRESNET_CONFIGS[network], "input_size": face_size})


def _load_state(model: nn.Module, state: dict, path, name: str) -> None:
    mismatch = checkpoint.describe_mismatch(state, model.state_dict())
    if mismatch:
        raise UserError(f"{path} does not fit {name}: {mismatch}")
    model.load_state_dict(state)


def load_recognizer(path: str | os.PathLike, network: str = "iresnet50", face_size: int = 112) -> IResNet:
    """A face encoder in eval mode: the ``final.pt`` of a stage-``fr`` run, or an arcface_torch IResNet
    ``state_dict`` (``network`` at ``face_size``)."""
    saved = checkpoint.load_checkpoint(path)
    config = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    if config.get("stage") == "mae":
        raise UserError(f"{path} holds an MAE, not a face encoder: pass the final.pt of a --stage fr run")
    if config.get("stage") == "fr":
        network, face_size, state = config["network"], config["face_size"], saved["model"]
    else:
        state = checkpoint.unwrap_state_dict(saved, source=str(path))
    model = build_recognizer(network, face_size)
    _load_state(model, state, path, network)
    return model.eval()


def load_mae(path: str | os.PathLike) -> tuple[MaskedAutoencoderViT, dict]:
    """The MAE of a stage-``mae`` run's ``final.pt`` (eval mode) and the run's configuration."""
    saved = checkpoint.load_checkpoint(path)
    config = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    if config.get("stage") != "mae":
        raise UserError(f"{path} is not the final.pt of a facemae-train --stage mae run")
    mae = MaskedAutoencoderViT(**MAE_CONFIGS[config["model"]], loss_on=config["loss_on"])
    _load_state(mae, saved["model"], path, config["model"])
    return mae.eval(), config


def irm_encoder_file(mae_weights: str | os.PathLike) -> Path:
    """The phi whose relations an MAE run's IRM matched: its ``irm_weights``, or the recogniser it trained on
    the source originals (``<run>/phi/final.pt``), the attacker of ``facemae-privacy --attacker irm``."""
    config = load_mae(mae_weights)[1]
    trained_here = Path(mae_weights).parent / "phi" / "final.pt"
    path = Path(config["irm_weights"]) if config.get("irm_weights") else trained_here
    if not path.is_file():
        raise UserError(
            f"{path}, the IRM encoder of the MAE run {mae_weights}, is missing (a run with lambda_irm 0 trains "
            "none): pass --attacker-weights"
        )
    return path


@torch.no_grad()
def embed(model: nn.Module, pixels: torch.Tensor, device: torch.device, *, flip: bool = False) -> torch.Tensor:
    """Embeddings (N, D) of uint8 faces (their horizontal flip's added with ``flip``, as InsightFace verifies)."""
    model.eval().to(device)
    chunks = []
    for start in range(0, len(pixels), EMBED_BATCH):
        x = _resized(normalize_faces(pixels[start : start + EMBED_BATCH].to(device)), model.input_size)
        e = model(x)
        chunks.append((e + model(x.flip(-1)) if flip else e).float().cpu())
    return torch.cat(chunks)


def verify(model: nn.Module, pairs: VerificationPairs, device: torch.device, folds: int = 10) -> dict[str, float]:
    """10-fold verification accuracy of ``model`` on a pair set (InsightFace ``eval/verification.py``)."""
    return verification_accuracy(embed(model, pairs.images, device, flip=True), pairs.issame, folds)


# --- stage A: MAE + IRM -----------------------------------------------------------------------------------------


def mae_lr(config: MAEConfig, epoch: float) -> float:
    """Linear warm-up then half-cycle cosine to ``min_lr`` at fractional ``epoch`` (mae ``util/lr_sched.py``)."""
    if epoch < config.warmup_epochs:
        return config.lr * epoch / config.warmup_epochs
    progress = (epoch - config.warmup_epochs) / (config.epochs - config.warmup_epochs)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def mae_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and 1-D parameters (timm ``add_weight_decay``, as ``main_pretrain.py``)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def facemae_loss(
    mae: MaskedAutoencoderViT,
    phi: nn.Module | None,
    faces: torch.Tensor,
    config: MAEConfig,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """L = L_rec + lambda_irm x L_IRM on a batch of faces in [-1, 1] (masks drawn, or from ``noise``); returns
    (L, L_rec, L_IRM, the decoder's patches, the mask). IRM is computed whenever phi is given.

    The MAE sees the faces at its input size; phi sees originals and compositions at the face size.
    """
    core = distributed.unwrap_model(mae)  # ``mae`` may be DDP-wrapped: its forward syncs the gradients
    inputs = _resized(faces, core.patch_embed.img_size)
    rec, pred, mask = mae(inputs, config.mask_ratio, noise=noise)
    if phi is None:
        return rec, rec, torch.zeros((), device=faces.device), pred, mask
    recon = core.compose(inputs, pred, mask, config.compose)
    with torch.no_grad():
        real = phi(faces)
    irm = irm_loss(real, phi(_resized(recon, faces.shape[-1])), config.irm, config.tau)
    return rec + config.lambda_irm * irm, rec, irm, pred, mask


@torch.no_grad()
def evaluate_mae(
    mae: MaskedAutoencoderViT,
    phi: nn.Module | None,
    pixels: torch.Tensor,
    config: MAEConfig,
    device: torch.device,
    seed: int = 0,
) -> dict[str, float]:
    """The MAE on uint8 faces in consecutive batches of ``config.batch_size`` (order them identity-balanced), each
    face with its seeded mask: L_rec, L_IRM (with phi), and the PSNR (dB, images in [-1, 1]) over the masked
    patches of the MAE and of the mean fill (each masked patch set to its image's mean)."""
    mae.eval()
    totals: dict[str, list[float]] = {"loss_rec": [], "loss_irm": [], "psnr_masked": [], "psnr_mean_fill": []}
    for start in range(0, len(pixels) - 2, config.batch_size):  # IRM relates >= 3 faces
        faces = normalize_faces(pixels[start : start + config.batch_size].to(device))
        seeds = [mask_seed(seed, start + i, 0) for i in range(len(faces))]
        noise = mask_noise(seeds, mae.num_patches).to(device)
        _, rec, irm, pred, mask = facemae_loss(mae, phi, faces, config, noise)
        target = mae.patchify(_resized(faces, mae.patch_embed.img_size))
        fill = target.mean(dim=(1, 2), keepdim=True).expand_as(target)
        for name, guess in (("psnr_masked", pred.float()), ("psnr_mean_fill", fill)):
            mse = ((guess - target).pow(2).mean(-1) * mask).sum(1) / mask.sum(1)
            totals[name] += (10 * torch.log10(4.0 / mse.clamp_min(1e-12))).tolist()
        totals["loss_rec"] += [float(rec)] * len(faces)
        totals["loss_irm"] += [float(irm)] * len(faces)
    return {name: float(np.mean(values)) for name, values in totals.items()}


def balanced_order(labels: Sequence[int], config: MAEConfig, seed: int = 0) -> list[int]:
    """Indices of a face set in identity-balanced batches, as training sees them (a fixed shuffle)."""
    sampler = IdentityBalancedSampler(labels, config.identities_per_batch, config.images_per_identity, seed)
    return [i for batch in sampler for i in batch]


def _phi(config: MAEConfig, out: Path, device: torch.device, workers: int, quiet: bool) -> nn.Module | None:
    """The frozen IRM encoder: ``irm_weights``, or the recogniser trained on the source originals in ``out/phi``."""
    if config.lambda_irm == 0:
        return None
    if config.irm_weights is not None:
        phi = load_recognizer(config.irm_weights, face_size=config.face_size)
        if phi.input_size != config.face_size:
            raise UserError(
                f"--irm-weights {config.irm_weights} embeds {phi.input_size}px faces, not {config.face_size}"
            )
    else:
        phi = trained_recognizer(phi_config(config), out / "phi", device, workers=workers, quiet=quiet)
    return phi.to(device).eval().requires_grad_(False)


def trained_recognizer(
    config: FRConfig, folder: Path, device: torch.device, *, workers: int = 0, quiet: bool = False
) -> IResNet:
    """The recogniser of the run in ``folder``: loaded when it finished, else trained (resumed if it started)."""
    if not (folder / "final.pt").is_file():
        fit(config, folder, device, resume=checkpoint.latest(folder) is not None, workers=workers, quiet=quiet)
    return load_recognizer(folder / "final.pt")


def _fit_mae(config: MAEConfig, out: Path, device: torch.device, latest: Path | None, workers: int, quiet: bool):
    log = get_logger()
    faces = training_faces(config.data, config.face_size, "source")
    phi = _phi(config, out, device, workers, quiet)
    seed_everything(config.seed)
    mae = build_mae(config).to(device)
    model = distributed.wrap_model(mae, device)
    optimizer = torch.optim.AdamW(mae_param_groups(mae, config.weight_decay), lr=config.lr, betas=config.betas)
    scaler = AmpScaler(device, config.amp)
    sampler = IdentityBalancedSampler(
        faces.labels,
        config.identities_per_batch,
        config.images_per_identity,
        config.seed,
        rank=distributed.get_rank(),
        replicas=distributed.get_world_size(),
    )
    loader = DataLoader(faces, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0)
    monitor = torch.stack([faces[i][0] for i in balanced_order(faces.labels, config, config.seed)[:64]])
    start = _start(out, latest, mae, optimizer, None, scaler, config)
    steps = len(sampler)
    for epoch in range(start + 1, config.epochs + 1):
        sampler.set_epoch(epoch)
        mae.train()
        sums = torch.zeros(3)
        for i, (pixels, _) in enumerate(loader):
            lr = mae_lr(config, epoch - 1 + i / steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, config.amp):
                loss, rec, irm, _, _ = facemae_loss(model, phi, normalize_faces(pixels.to(device)), config)
            _check_finite(loss, epoch)
            optimizer.zero_grad(set_to_none=True)
            scaler(loss, optimizer)
            sums += torch.stack([loss.detach(), rec.detach(), irm.detach()]).float().cpu()
        means = distributed.all_reduce_mean(sums / steps).tolist()
        record = {"epoch": epoch, "lr": lr, "loss": means[0], "loss_rec": means[1], "loss_irm": means[2]}
        monitored = evaluate_mae(mae, phi, monitor, config, device, config.seed)
        record |= {key: monitored[key] for key in ("psnr_masked", "psnr_mean_fill")}
        _end_epoch(out, epoch, record, mae, optimizer, None, scaler, quiet)
    last = _last_record(out)
    results = {key: last[key] for key in ("loss", "loss_rec", "loss_irm", "psnr_masked", "psnr_mean_fill")}
    results |= {"stage": "mae", "epochs": config.epochs, "lambda_irm": config.lambda_irm, "source_images": len(faces)}
    if results["psnr_masked"] <= results["psnr_mean_fill"]:
        log.warning(
            f"the MAE reconstructs masked patches no better than their image's mean ({results['psnr_masked']:.2f} vs "
            f"{results['psnr_mean_fill']:.2f} dB on 64 source faces): train longer or check the data"
        )
    return mae, results


# --- stage C: recognition ---------------------------------------------------------------------------------------


class Recognizer(nn.Module):
    """A face encoder and its margin head; the forward is the training loss (so that DDP can wrap it)."""

    def __init__(self, backbone: IResNet, head: MarginHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head.loss(self.backbone(images).float(), labels)


def _fit_fr(config: FRConfig, out: Path, device: torch.device, latest: Path | None, workers: int, quiet: bool):
    log = get_logger()
    faces = training_faces(config.data, config.face_size, "target")
    pair_sets = verification_sets(config.val, config.face_size, config.data)
    seed_everything(config.seed)
    recognizer = Recognizer(
        build_recognizer(config.network, config.face_size),
        MarginHead(512, num_identities(faces), config.margins, config.s),
    ).to(device)
    model = distributed.wrap_model(recognizer, device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.lr_steps, gamma=0.1)
    scaler = AmpScaler(device, config.amp)
    loader = make_loader(
        faces, config.batch_size, shuffle=True, seed=config.seed, workers=workers, drop_last=True, device=device
    )
    if len(loader) == 0:
        raise UserError(f"{len(faces)} faces fill no batch of --batch-size {config.batch_size}: lower it")
    start = _start(out, latest, model, optimizer, scheduler, scaler, config)
    verification = None
    for epoch in range(start + 1, config.epochs + 1):
        set_epoch(loader, epoch)
        model.train()
        total = torch.zeros(())
        for pixels, labels in loader:
            x = normalize_faces(pixels.to(device))
            flip = torch.rand(len(x), device=device) < 0.5  # random horizontal flip, the only augmentation
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            with autocast(device, config.amp):
                loss = model(x, labels.to(device))
            _check_finite(loss, epoch)
            optimizer.zero_grad(set_to_none=True)
            scaler(loss, optimizer)
            total += loss.detach().float().cpu()
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        record["loss"] = float(distributed.all_reduce_mean(total / len(loader)))
        scheduler.step()
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            verification = {p.name: verify(recognizer.backbone, p, device) for p in pair_sets}
            record |= {f"{name}_acc": scores["accuracy"] for name, scores in verification.items()}
        _end_epoch(out, epoch, record, model, optimizer, scheduler, scaler, quiet)
    if verification is None:  # resumed from the last epoch's checkpoint
        verification = {p.name: verify(recognizer.backbone, p, device) for p in pair_sets}
    for name, scores in verification.items():
        if scores["accuracy"] < 0.55:
            log.warning(f"verification accuracy on {name} is {scores['accuracy']:.3f}, near chance (0.5)")
    results = {"stage": "fr", "loss": _last_record(out)["loss"], "verification": verification}
    results |= {"epochs": config.epochs, "identities": num_identities(faces), "images": len(faces)}
    return recognizer.backbone, results


# --- one run ---------------------------------------------------------------------------------------------------


def _check_finite(loss: torch.Tensor, epoch: int) -> None:
    if not torch.isfinite(loss):
        raise UserError(f"the loss became {float(loss)} in epoch {epoch}: lower the learning rate or use fp32")


def _start(out: Path, latest: Path | None, model, optimizer, scheduler, scaler, config: TrainConfig) -> int:
    """The epoch a run starts after: its checkpoint's on resume (state restored), else 0 (``config.json`` written)."""
    if latest is None:
        if distributed.is_main_process():
            checkpoint.save_json(out / "config.json", {"train_config": plain(config)})
        return 0
    state = checkpoint.restore_training_state(checkpoint.load_checkpoint(latest), model, optimizer, scheduler, scaler)
    MetricsWriter(out / "metrics.jsonl").rewind("epoch", state["epoch"])
    get_logger().info(f"resumed from {latest} at epoch {state['epoch']}")
    return state["epoch"]


def _end_epoch(out: Path, epoch: int, record: dict, model, optimizer, scheduler, scaler, quiet: bool) -> None:
    MetricsWriter(out / "metrics.jsonl").write(record)
    if not quiet:
        get_logger().info(format_record(record))
    state = checkpoint.training_state(model, optimizer, scheduler, scaler, epoch=epoch)
    checkpoint.save_training_checkpoint(out, epoch, state)


def _last_record(out: Path) -> dict:
    distributed.barrier()  # the main process has written the record
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1])


def fit(
    config: TrainConfig,
    out: str | os.PathLike,
    device: torch.device,
    *,
    resume: bool = False,
    workers: int = 0,
    quiet: bool = False,
) -> dict:
    """Train ``config`` (stage ``mae`` or ``fr``) into ``out`` and return the results (also ``results.json``).

    ``resume`` continues from the latest checkpoint in ``out`` with the result of an uninterrupted run.
    """
    out = Path(out)
    latest = checkpoint.resume_checkpoint(out) if resume else None
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    run = _fit_mae if isinstance(config, MAEConfig) else _fit_fr
    model, results = run(config, out, device, latest, workers, quiet)
    results["train_seconds"] = round(time.monotonic() - started, 1)
    checkpoint.save_checkpoint(out / "final.pt", {"model": model.state_dict(), "config": plain(config)})
    if distributed.is_main_process():
        checkpoint.save_json(out / "results.json", results)
    distributed.barrier()  # every process may now read final.pt (phi, the attacker)
    return results


# --- stage B: releases -----------------------------------------------------------------------------------------


def mask_seed(seed: int, index: int, view: int) -> int:
    """The seed of the mask (and noise) of view ``view`` of face ``index``: reproducible per image."""
    return int(np.random.SeedSequence([seed, index, view]).generate_state(1)[0])


def mask_noise(seeds: Sequence[int], patches: int) -> torch.Tensor:
    """The masking noise (B, patches) of each seed: ``random_masking`` keeps the patches of lowest noise."""
    return torch.stack([torch.rand(patches, generator=torch.Generator().manual_seed(s)) for s in seeds])


def masks_from_noise(noise: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """The (B, N) mask (1 = masked) that ``MaskedAutoencoderViT.random_masking`` draws from ``noise``."""
    keep = int(noise.shape[1] * (1 - mask_ratio))
    return (noise.argsort(1).argsort(1) >= keep).float()


def release_images(
    method: str,
    pixels: torch.Tensor,
    seeds: Sequence[int],
    *,
    mask_ratio: float = 0.75,
    mae: MaskedAutoencoderViT | None = None,
    compose: str = "paste",
    grid: int = 8,
    device: torch.device | None = None,
) -> torch.Tensor:
    """The released version (uint8) of uint8 faces by ``method`` (one of :data:`RELEASES`); ``seeds`` are the
    per-image mask seeds. ``mae`` reconstructs its masked patches; ``masked`` sets the same patches of a
    ``grid`` x ``grid`` patching to 0 (mid-grey); ``blur``, ``pixelate`` and ``noise`` are the classic
    distortions, with strengths given at 112 px and scaled to the face size."""
    device = device or torch.device("cpu")
    x = normalize_faces(pixels.to(device))
    size = x.shape[-1]
    if method == "mae":
        if mae is None:
            raise UserError("the mae release needs a trained MAE: pass --weights FINAL.pt of a --stage mae run")
        mae.eval().to(device)
        inputs = _resized(x, mae.patch_embed.img_size)
        with torch.no_grad():
            _, pred, mask = mae(inputs, mask_ratio, noise=mask_noise(seeds, mae.num_patches).to(device))
            x = _resized(mae.compose(inputs, pred, mask, compose), size)
    elif method == "masked":
        if size % grid:
            raise UserError(f"a {size}px face does not split into {grid} x {grid} patches")
        mask = masks_from_noise(mask_noise(seeds, grid * grid), mask_ratio).to(device)
        pixel_mask = mask.view(-1, 1, grid, grid).repeat_interleave(size // grid, 2).repeat_interleave(size // grid, 3)
        x = x * (1 - pixel_mask)
    elif method == "blur":
        sigma, channels = BLUR_SIGMA * size / 112, x.shape[1]
        half = math.ceil(3 * sigma)
        window = gaussian_window(2 * half + 1, sigma, channels).to(device)
        x = F.conv2d(F.pad(x, [half] * 4, mode="reflect"), window, groups=channels)
    elif method == "pixelate":
        small = F.interpolate(x, size=max(1, size // PIXELATE_FACTOR), mode="area")
        x = F.interpolate(small, size=size, mode="nearest")
    elif method == "noise":
        noise = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])
        x = x + NOISE_SIGMA * noise.to(device)
    elif method != "original":
        raise UserError(f"unknown release method {method!r}: choose one of {', '.join(RELEASES)}")
    return denormalize_faces(x.clamp(-1, 1)).cpu()


def reconstruct_dataset(
    method: str,
    faces: Dataset,
    out: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    mae: MaskedAutoencoderViT | None = None,
    fmt: str = "folder",
    mask_ratio: float = 0.75,
    views: int = 1,
    seed: int = 0,
    compose: str = "paste",
    grid: int = 8,
    device: torch.device | None = None,
    source: str = "",
    weights: str = "",
) -> Path:
    """Release every face of ``faces`` (``views`` times, each with its own mask seed) into ``out`` as identity
    folders (``fmt="folder"``) or a RecordIO pack (``rec``) with its identity label, and write the private
    ``manifest`` (JSON: each released item's source index, view, identity, location and mask seed). The
    manifest lets its holder measure leakage; it is not part of the release. ``weights`` (recorded) names the
    MAE's ``final.pt``. Returns the manifest path."""
    if fmt not in ("folder", "rec"):
        raise UserError(f"--format must be folder or rec, got {fmt!r}")
    if views < 1 or not 0 < mask_ratio < 1:
        raise UserError(f"need --views >= 1 and --mask-ratio in (0, 1), got {views} and {mask_ratio}")
    out, manifest = Path(out), Path(manifest)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: choose a new folder for the release")
    if manifest.resolve().is_relative_to(out.resolve()):
        raise UserError(f"the manifest {manifest} must stay outside the release folder {out}")
    out.mkdir(parents=True, exist_ok=True)
    names = identity_names(faces)
    items: list[dict] = []
    released: list[tuple[int, torch.Tensor]] = []  # (label, image) for a RecordIO pack, written sorted by label
    for view in range(views):
        for start in range(0, len(faces), 64):
            batch = [faces[i] for i in range(start, min(start + 64, len(faces)))]
            indices = list(range(start, start + len(batch)))
            seeds = [mask_seed(seed, i, view) for i in indices]
            pixels = torch.stack([image for image, _ in batch])
            images = release_images(
                method, pixels, seeds, mask_ratio=mask_ratio, mae=mae, compose=compose, grid=grid, device=device
            )
            for index, (_, label), image, s in zip(indices, batch, images, seeds, strict=True):
                item = {"source": index, "view": view, "label": int(label), "mask_seed": s}
                if fmt == "folder":
                    path = Path(names[label]) / f"{index:07d}_{view}.png"
                    (out / path.parent).mkdir(exist_ok=True)
                    (out / path).write_bytes(encode_image(image))
                    item["path"] = str(path)
                else:
                    released.append((int(label), image))
                items.append(item)
    if fmt == "rec":
        order = sorted(range(len(items)), key=lambda k: items[k]["label"])
        with RecordIOWriter(out, faces[0][0].shape[-1], num_classes=len(names)) as writer:
            for k in order:
                items[k]["key"] = writer.write(released[k][1], released[k][0])
    record = {"method": method, "mask_ratio": mask_ratio, "views": views, "seed": seed, "compose": compose}
    record |= {"grid": grid, "format": fmt, "release": str(out), "source": source, "source_count": len(faces)}
    record["weights"] = weights
    checkpoint.save_json(manifest, record | {"items": items})
    return manifest


def read_release(manifest: str | os.PathLike, release: str | os.PathLike | None = None) -> tuple[dict, torch.Tensor]:
    """A manifest and its released faces (uint8, in the manifest's item order); ``release`` overrides the folder
    the manifest names."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise UserError(f"manifest not found: {manifest}")
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
        items = record["items"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{manifest} is not a manifest written by facemae-reconstruct") from None
    folder = Path(release or record["release"])
    if record["format"] == "rec":
        reader = RecordIOReader(folder / "train.rec")
        images = [
            decode_image(unpack_payload(reader.read_record(i["key"]), f"key {i['key']}")[1], f"key {i['key']}")
            for i in items
        ]
    else:
        missing = next((i["path"] for i in items if not (folder / i["path"]).is_file()), None)
        if missing is not None:
            raise UserError(f"{folder / missing} is listed in {manifest} but missing: pass the release it describes")
        images = [decode_image((folder / i["path"]).read_bytes(), str(folder / i["path"])) for i in items]
    return record, torch.stack(images)


# --- stage D: privacy ------------------------------------------------------------------------------------------


def privacy_report(
    attacker: nn.Module,
    originals: torch.Tensor,
    labels: torch.Tensor,
    released: torch.Tensor,
    sources: torch.Tensor,
    device: torch.device,
    *,
    topk: Sequence[int] = (1, 5),
    gallery: str = "all",
) -> dict:
    """Leakage of a release: each released face (uint8) retrieves among the originals (uint8, identities
    ``labels``) by the attacker's cosine similarity; instance/identity leak@k with chance levels, mean cosine
    between release and source, and PSNR/SSIM of each release against its source (higher: more leakage)."""
    if len(released) != len(sources) or int(sources.max()) >= len(originals):
        raise UserError(f"the release's sources index {int(sources.max()) + 1} originals, the set has {len(originals)}")
    report = leak_rates(
        embed(attacker, originals, device), labels, embed(attacker, released, device), sources, topk, gallery
    )
    pairs = normalize_faces(released), normalize_faces(originals[sources])
    report |= {"psnr": float(psnr(*pairs).mean())}
    if min(released.shape[-2:]) >= 11:
        report["ssim"] = float(ssim(*pairs).mean())
    report["protocol"] = (
        f"cosine retrieval of {len(released)} released faces among {len(originals)} originals, gallery {gallery}"
    )
    return report
