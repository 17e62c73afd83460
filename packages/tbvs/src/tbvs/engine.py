"""Training and evaluation of TBVS (Zhao et al., CVPR 2022): :func:`fit`, :func:`evaluate`, :func:`evaluate_file`.

The official trainer (``train.py`` / ``train_distributed_launch.py``, ``model/model.py``) counts iterations,
not epochs: Adam, a multi-step lr by iteration, the segmentation + alignment loss of ``model/losses.py``
(:class:`tbvs.losses.TBVSLoss`) and a periodic A2D test evaluation. Here the data are the TBVS prepared
layout read by :class:`tbvs.data.ClipDataset`; without ``--data``/``--raw`` the synthetic set of
:mod:`tbvs.synthetic` is generated, prepared and cached once (:func:`resolve_data`).

:func:`fit` owns a run's files: ``config.json``, ``vocab.txt`` (the tiny encoder's word list),
``metrics.jsonl`` (per log step: each loss term, train IoU, lr, it/s), ``eval.csv`` (iteration, subset and
the 8 benchmark numbers, per synthetic subset too), ``checkpoint-<iteration>.pt`` (model, text encoder,
optimizer, scheduler, AMP scaler, RNG, iteration and the log window: ``resume`` continues exactly),
``final.pt`` (weights and what rebuilds them) and ``results.json``. Under torchrun each process reads its
shard of every global batch and the gradients are averaged by DDP.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from shared import checkpoint, distributed
from shared.data import cache_dir
from shared.device import AmpScaler, autocast, seed_everything
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, format_record, get_logger, read_metrics
from shared.report import plain_json
from tbvs.config import TrainConfig, from_plain, to_plain
from tbvs.data import ClipDataset, prepare_a2d
from tbvs.losses import TBVSLoss
from tbvs.metrics import SegMeter, intersection_union
from tbvs.models import ARCHS, TBVSArch, TBVSNet, TBVSOutput
from tbvs.postprocess import LetterboxParams, unletterbox
from tbvs.postprocess import binarize as binarize_masks
from tbvs.synthetic import GENERATOR_VERSION, VOCABULARY, make_synthetic
from tbvs.text import WordTokenizer, build_text_encoder, build_tokenizer

EVAL_COLUMNS = ("P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "mAP", "overall_iou", "mean_iou")


# ---------------------------------------------------------------------------------------------------- data
def synthetic_key(config: TrainConfig) -> str:
    """The cache folder name of the synthetic set ``config`` asks for (generator version and parameters)."""
    return (
        f"synthetic-v{GENERATOR_VERSION}-tr{config.synthetic_train_videos}-te{config.synthetic_test_videos}"
        f"-s{config.synthetic_size}-f{config.synthetic_frames}-seed{config.synthetic_seed}-{config.flow}"
    )


def resolve_data(config: TrainConfig, *, quiet: bool = False) -> Path:
    """The prepared TBVS folder of ``config``: ``data``; ``raw`` prepared beside itself once
    (``<raw>/prepared-<flow>``); or the synthetic set generated and prepared once in the cache.

    A cached set is complete when its ``prepared`` folder exists (it is moved into place last), so an
    interrupted generation is redone, never read half-written. Under torchrun rank 0 writes, the others wait.
    """
    if config.data is not None:
        return require_path(config.data, "--data (a prepared TBVS folder)", kind="dir")
    if config.raw is not None:
        raw = require_path(config.raw, "--raw (raw A2D Sentences)", kind="dir")
        final = raw / f"prepared-{config.flow}"
        if distributed.is_main_process() and not final.is_dir():
            tmp = raw / f".prepared-{config.flow}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                prepare_a2d(raw, tmp, flow=config.flow)
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        distributed.barrier()
        return final
    folder = cache_dir("tbvs", synthetic_key(config))
    final = folder / "prepared"
    if distributed.is_main_process() and not final.is_dir():
        log = get_logger()
        if not quiet:
            log.info(f"generating the synthetic set into {folder} (once)")
        tmp = folder / f"tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            make_synthetic(
                tmp / "raw",
                train_videos=config.synthetic_train_videos,
                test_videos=config.synthetic_test_videos,
                size=config.synthetic_size,
                frames=config.synthetic_frames,
                seed=config.synthetic_seed,
                oracle_flow=config.flow == "oracle",
            )
            prepare_a2d(tmp / "raw", tmp / "prepared", flow=config.flow)
            os.replace(tmp / "prepared", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    distributed.barrier()
    return final


def clip_dataset(config: TrainConfig, root: Path, split: str, arch: TBVSArch, **kwargs: Any) -> ClipDataset:
    """A :class:`ClipDataset` of ``split`` at the network's input size and clip length; empty: UserError."""
    dataset = ClipDataset(
        root,
        split,
        size=arch.input_size,
        clip_len=arch.clip_len,
        max_ref_offset=config.max_ref_offset,
        color_jitter=config.color_jitter,
        dataset=kwargs.pop("dataset", config.dataset),
        seed=config.seed,
        **kwargs,
    )
    if len(dataset) == 0:
        raise UserError(f"the {split} split of {root} has no samples: check its list file")
    return dataset


class _EpochItems(Dataset):
    """``dataset[(index, epoch)]``: the sample of ``index`` drawn as in ``epoch`` (reference frames, jitter)."""

    def __init__(self, dataset: ClipDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


class IterationBatches(Sampler):
    """This process's share of every global batch from ``start`` to ``iterations`` (exclusive).

    The samples are shuffled once per epoch by ``(seed, epoch)`` and cut into ``len // global_batch``
    global batches (the tail is dropped); process ``rank`` takes rows ``rank::world`` of each. The order
    depends only on the seed and the iteration, so a resumed run continues where it stopped.
    """

    def __init__(self, count: int, global_batch: int, seed: int, start: int, iterations: int) -> None:
        self.count, self.global_batch, self.seed = count, global_batch, seed
        self.start, self.iterations = start, iterations
        self.per_epoch = count // global_batch
        self.rank, self.world = distributed.get_rank(), distributed.get_world_size()

    def __len__(self) -> int:
        return max(0, self.iterations - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, order_epoch = None, -1
        for it in range(self.start, self.iterations):
            epoch, step = divmod(it, self.per_epoch)
            if epoch != order_epoch:
                order = np.random.default_rng([self.seed, 7919, epoch]).permutation(self.count)
                order_epoch = epoch
            rows = order[step * self.global_batch : (step + 1) * self.global_batch][self.rank :: self.world]
            yield [(int(i), epoch) for i in rows]


class Collate:
    """Stack a list of :class:`ClipDataset` items and tokenize their sentences (runs in the loader workers)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = {k: torch.stack([it[k] for it in items]) for k in ("images", "flows", "mask", "orig_size", "letterbox")}
        batch["index"] = torch.tensor([it["index"] for it in items])
        batch["subset"] = [it["subset"] for it in items]
        batch["ids"], batch["attn"] = self.tokenizer.encode([it["query"] for it in items])
        return batch


def _loader(dataset: Dataset, batch_sampler, tokenizer, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=Collate(tokenizer),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        generator=torch.Generator(),  # the workers' base seed must not draw from the global RNG (exact resume)
    )


# ---------------------------------------------------------------------------------------------------- model
class Segmenter(nn.Module):
    """The text encoder and :class:`TBVSNet` in one module (what the optimizer and DDP see)."""

    def __init__(self, text: nn.Module, net: TBVSNet) -> None:
        super().__init__()
        self.text, self.net = text, net

    def forward(
        self, images: torch.Tensor, flows: torch.Tensor, ids: torch.Tensor, attn: torch.Tensor, with_alignment=True
    ) -> TBVSOutput:
        tokens = self.text(ids, attn)
        flows = flows if self.net.arch.use_flow else None
        return self.net(images, flows, tokens, attn, with_alignment=with_alignment)


def build_text(config: TrainConfig, vocab: Sequence[str] | None):
    """(tokenizer, encoder) of ``config``: a word tokenizer over ``vocab`` + TinyTextEncoder, or local BERT."""
    if config.text_encoder == "tiny":
        tokenizer = build_tokenizer("tiny", max_tokens=config.max_tokens, vocab=vocab)
        dim = _tiny_text_dim(config)
        encoder = build_text_encoder(
            "tiny", vocab_size=tokenizer.vocab_size, dim=dim, layers=config.text_layers, max_tokens=config.max_tokens
        )
    else:
        tokenizer = build_tokenizer("hf-bert", max_tokens=config.max_tokens, path=config.text_model)
        encoder = build_text_encoder("hf-bert", path=config.text_model, freeze_embeddings=config.freeze_text_embeddings)
    return tokenizer, encoder


def _tiny_text_dim(config: TrainConfig) -> int:
    return int(config.arch_overrides.get("text_dim", ARCHS[config.arch].text_dim))


def build_model(config: TrainConfig, vocab: Sequence[str] | None) -> tuple[Segmenter, Any]:
    """(Segmenter, tokenizer) of ``config``; the network's text width is the encoder's."""
    tokenizer, encoder = build_text(config, vocab)
    arch = config.build_arch(encoder.dim)
    net = TBVSNet(arch, rgb_weights=config.rgb_weights, flow_weights=config.flow_weights)
    return Segmenter(encoder, net), tokenizer


def training_vocab(dataset: ClipDataset) -> list[str]:
    """The word list of the training sentences (plus the synthetic vocabulary), sorted."""
    words = {w for s in dataset.samples for w in WordTokenizer.words(s.query)}
    return sorted(words | set(VOCABULARY))


# ---------------------------------------------------------------------------------------------------- evaluation
def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: TBVSNet,
    encoder: nn.Module,
    tokenizer,
    dataset: ClipDataset,
    device: torch.device,
    *,
    binarize: str = "relative",
    batch_size: int = 8,
    workers: int = 0,
    amp: bool = False,
) -> dict[str, dict[str, float]]:
    """The 8 benchmark numbers of ``model`` on ``dataset``, overall and per synthetic subset.

    Predictions at the network's input size are un-letterboxed to each frame's original size, binarised
    (``relative``: > 0.5 x the sample's maximum, as ``a2d_test.py``; ``absolute``: > 0.5) and compared with
    the ground-truth mask. Under torchrun each process predicts its shard; the counts are summed.
    """
    if len(dataset) == 0:
        raise UserError("the evaluation split has no samples")
    was_training = model.training, encoder.training
    model.eval(), encoder.eval()
    count = len(dataset)
    shard = list(range(distributed.get_rank(), count, distributed.get_world_size()))
    batches = [[(i, 0) for i in shard[k : k + batch_size]] for k in range(0, len(shard), batch_size)]
    inter = torch.zeros(count, dtype=torch.float64)
    union = torch.zeros(count, dtype=torch.float64)
    for batch in _loader(_EpochItems(dataset), batches, tokenizer, workers, device):
        batch = _to(batch, device)
        with autocast(device, amp):
            tokens = encoder(batch["ids"], batch["attn"])
            flows = batch["flows"] if model.arch.use_flow else None
            prob = model.predict(batch["images"], flows, tokens, batch["attn"]).float()
        sizes = zip(batch["orig_size"].tolist(), batch["letterbox"].tolist(), strict=True)
        params = [LetterboxParams(h, w, prob.shape[-1], nh, nw, top, left) for (h, w), (nh, nw, top, left) in sizes]
        for index, full in zip(batch["index"].tolist(), unletterbox(prob, params), strict=True):
            pred = binarize_masks(full[None].cpu(), binarize)
            i, u = intersection_union(pred, dataset.gt_mask(index)[None, None])
            inter[index], union[index] = float(i[0]), float(u[0])
    inter, union = distributed.all_reduce_sum(inter), distributed.all_reduce_sum(union)
    meter = SegMeter()
    groups = [dataset.subsets.get(s.video, {}).get(str(s.instance_id), "") for s in dataset.samples]
    meter.add(inter.long(), union.long(), groups if all(groups) else None)
    model.train(was_training[0]), encoder.train(was_training[1])
    return meter.summary_by_group()


# ---------------------------------------------------------------------------------------------------- training
@dataclass
class _Window:
    """Sums of the loss terms (and train IoU) since the last log line."""

    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    steps: int = 0

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}


def _train_iou(logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean IoU of the relative-binarised predictions at input size (a training signal, not the benchmark)."""
    pred = binarize_masks(torch.sigmoid(logits.detach().float()), "relative")
    i, u = intersection_union(pred, mask > 0.5)
    return float(((i + 1e-6) / (u + 1e-6)).mean())


def _write_eval_rows(path: Path, iteration: int, metrics: dict[str, dict[str, float]]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["iteration", "subset", *EVAL_COLUMNS])
        for subset, values in metrics.items():
            writer.writerow([iteration, subset, *(f"{values[c]:.6f}" for c in EVAL_COLUMNS)])


def _rewind_eval(path: Path, iteration: int) -> None:
    """Drop the rows of ``eval.csv`` after ``iteration`` (a resumed run writes them again)."""
    if not path.exists():
        return
    rows = list(csv.reader(io.StringIO(path.read_text())))
    kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= iteration]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(kept)
    checkpoint.atomic_write(path, lambda f: f.write(buffer.getvalue()), binary=False)


def read_eval(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of an ``eval.csv`` (iteration as int, metrics as float)."""
    with open(path, newline="") as f:
        return [
            {"iteration": int(r["iteration"]), "subset": r["subset"], **{c: float(r[c]) for c in EVAL_COLUMNS}}
            for r in csv.DictReader(f)
        ]


def _meta(config: TrainConfig, arch: TBVSArch, vocab: list[str] | None) -> dict[str, Any]:
    return {"config": to_plain(config), "arch": plain_json(arch), "vocab": vocab}


def fit(
    config: TrainConfig,
    out: str | os.PathLike,
    device: torch.device,
    *,
    resume: bool = False,
    quiet: bool = False,
    stop_after: int | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``config`` into ``out`` and return the results (also ``results.json``).

    ``resume`` continues from the newest checkpoint in ``out`` with the result of an uninterrupted run.
    ``stop_after`` ends after that many iterations with a checkpoint (no final evaluation; returns the
    progress), as an interrupted run would. ``info`` is recorded in ``config.json``.
    """
    out = Path(out)
    log = get_logger()
    latest = checkpoint.resume_checkpoint(out) if resume else None
    if distributed.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    world = distributed.get_world_size()
    if config.batch_size % world:
        raise UserError(
            f"--batch-size {config.batch_size} (clips per step) must be a multiple of the {world} processes"
        )
    root = resolve_data(config, quiet=quiet)
    probe = config.build_arch(1)
    train_set = clip_dataset(config, root, "train", probe, train=True)
    test_set = clip_dataset(config, root, "test", probe, train=False)
    if len(train_set) < config.batch_size:
        raise UserError(
            f"the train split has {len(train_set)} samples, fewer than one batch of {config.batch_size}: "
            "lower --batch-size or add data"
        )
    saved = checkpoint.load_checkpoint(latest) if latest is not None else None
    if saved is not None:
        vocab = saved["extra"]["vocab"]
    else:
        vocab = training_vocab(train_set) if config.text_encoder == "tiny" else None
    seed_everything(config.seed)
    segmenter, tokenizer = build_model(config, vocab)
    arch = segmenter.net.arch
    model = distributed.wrap_model(
        segmenter, device, **({"find_unused_parameters": True} if config.text_encoder == "hf-bert" else {})
    )
    params = [p for p in segmenter.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)  # Adam defaults, no weight decay (official)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    scaler = AmpScaler(device, config.amp)
    criterion = TBVSLoss()
    metrics = MetricsWriter(out / "metrics.jsonl")
    eval_path = out / "eval.csv"
    start, window, seconds_before = 0, _Window(), 0.0
    if saved is not None:
        state = checkpoint.restore_training_state(saved, segmenter, optimizer, scheduler, scaler)
        start = state["step"]
        window = _Window(dict(state["extra"]["window"]), state["extra"]["window_steps"])
        seconds_before = float(state["extra"]["seconds"])
        if distributed.is_main_process():
            metrics.rewind("iteration", start)
            _rewind_eval(eval_path, start)
        if not quiet:
            log.info(f"resumed from {latest} at iteration {start}")
    elif distributed.is_main_process():
        checkpoint.save_json(out / "config.json", {**_meta(config, arch, vocab), "data": str(root), **(info or {})})
        if vocab is not None:
            (out / "vocab.txt").write_text("".join(f"{w}\n" for w in vocab))
    end = config.iterations if stop_after is None else min(config.iterations, max(start, stop_after))
    if not quiet:
        log.info(
            f"tbvs: {config.variant} ({config.arch}), {len(train_set)} train / {len(test_set)} test samples, "
            f"{config.iterations} iterations of batch {config.batch_size}, {world} process(es) -> {out}"
        )
    sampler = IterationBatches(len(train_set), config.batch_size, config.seed, start, end)
    loader = _loader(_EpochItems(train_set), sampler, tokenizer, config.workers, device)
    model.train()
    started = time.monotonic()
    tick, tick_it = started, start
    iteration = start

    def save_checkpoint(it: int) -> None:
        extra = {
            **_meta(config, arch, vocab),
            "window": dict(window.sums),
            "window_steps": window.steps,
            "seconds": seconds_before + time.monotonic() - started,
        }
        state = checkpoint.training_state(segmenter, optimizer, scheduler, scaler, step=it, epoch=it, **extra)
        if distributed.is_main_process():
            checkpoint.save_training_checkpoint(out, it, state, keep=config.keep_checkpoints)

    def run_eval(it: int) -> dict[str, dict[str, float]]:
        result = evaluate(
            segmenter.net,
            segmenter.text,
            tokenizer,
            test_set,
            device,
            binarize=config.binarize,
            batch_size=config.eval_batch_size,
            workers=config.workers,
            amp=config.amp,
        )
        if distributed.is_main_process():
            _write_eval_rows(eval_path, it, result)
        if not quiet:
            parts = [f"{g} mean IoU {m['mean_iou']:.3f} / overall {m['overall_iou']:.3f}" for g, m in result.items()]
            log.info(f"eval @ {it}: " + ", ".join(parts))
        return result

    final_metrics = None
    for batch in loader:
        batch = _to(batch, device)
        with autocast(device, config.amp):
            output = model(batch["images"], batch["flows"], batch["ids"], batch["attn"])
        losses = criterion(_float_output(output), batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        scaler(losses["total"], optimizer)
        scheduler.step()
        iteration += 1
        values = {k: float(v.detach()) for k, v in losses.items()}
        values["train_iou"] = _train_iou(output.logits, batch["mask"])
        window.add(values)
        if iteration % config.log_every == 0 or iteration == config.iterations:
            now = time.monotonic()
            rate = (iteration - tick_it) / max(now - tick, 1e-9)
            record = {"iteration": iteration, **window.means(), "lr": optimizer.param_groups[0]["lr"], "it_s": rate}
            metrics.write(record)
            if not quiet:
                eta = (config.iterations - iteration) / max(rate, 1e-9)
                log.info(f"{format_record(record)} eta={eta:.0f}s")
            window, tick, tick_it = _Window(), now, iteration
        if iteration % config.checkpoint_every == 0 or iteration == end:
            save_checkpoint(iteration)
        if config.eval_every and iteration % config.eval_every == 0 and iteration < config.iterations:
            run_eval(iteration)
    if iteration < config.iterations:
        distributed.barrier()
        return {"iterations": iteration, "stopped": True}
    seconds = seconds_before + time.monotonic() - started
    final_metrics = run_eval(iteration)
    results = {
        "variant": config.variant,
        "arch": config.arch,
        "iterations": iteration,
        "seconds": round(seconds, 1),
        "it_per_s": round(iteration / max(seconds, 1e-9), 3),
        "metrics": final_metrics,
        "final_loss": read_metrics(out / "metrics.jsonl")[-1]["total"] if distributed.is_main_process() else None,
    }
    if distributed.is_main_process():
        final = {"model": segmenter.state_dict(), **_meta(config, arch, vocab)}
        checkpoint.save_checkpoint(out / "final.pt", final)
        checkpoint.save_json(out / "results.json", results)
    distributed.barrier()
    return results


def _float_output(output: TBVSOutput) -> TBVSOutput:
    """The outputs in fp32 (the loss is computed outside autocast)."""
    return TBVSOutput(*(None if t is None or not t.is_floating_point() else t.float() for t in output[:4]), *output[4:])


# ---------------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A trained TBVS model: the network, its text encoder and tokenizer, and the run's configuration."""

    net: TBVSNet
    text: nn.Module
    tokenizer: Any
    config: TrainConfig


def load_model(path: str | os.PathLike) -> LoadedModel:
    """The model of a ``final.pt`` or ``checkpoint-<iteration>.pt`` written by :func:`fit` (eval mode)."""
    path = require_path(path, "--weights", kind="file")
    saved = checkpoint.load_checkpoint(path)
    meta = saved.get("extra", saved) if isinstance(saved, dict) else {}
    if not isinstance(meta, dict) or "config" not in meta or "model" not in saved:
        raise UserError(f"{path} is not a file written by tbvs-train (final.pt or checkpoint-<iteration>.pt)")
    config = from_plain(meta["config"])
    if config.text_encoder == "hf-bert" and not Path(str(config.text_model)).is_dir():
        raise UserError(f"{path} uses the BERT directory {config.text_model}, which is not here: restore it")
    config = dataclasses.replace(config, rgb_weights=None, flow_weights=None)
    segmenter, tokenizer = build_model(config, meta.get("vocab"))
    try:
        segmenter.load_state_dict(saved["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"{path} does not fit its own configuration ({first})") from None
    segmenter.eval()
    return LoadedModel(segmenter.net, segmenter.text, tokenizer, config)


def evaluate_file(
    weights: str | os.PathLike,
    data: str | os.PathLike | None,
    device: torch.device,
    *,
    split: str = "test",
    dataset: str = "a2d",
    shuffle_flow: bool = False,
    binarize: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """The 8 benchmark numbers of a saved model on ``split`` of the prepared folder ``data`` (None: the
    synthetic set the run trained on); ``shuffle_flow`` feeds the flow of another video (the motion control)."""
    loaded = load_model(weights)
    config = loaded.config
    if data is None:
        if not config.synthetic:
            raise UserError(f"{weights} was trained on {config.data or config.raw}: pass --data PREPARED_FOLDER")
        root = resolve_data(config, quiet=True)
    else:
        root = require_path(data, "--data (a prepared TBVS folder)", kind="dir")
    mode = binarize or config.binarize
    if mode not in ("relative", "absolute"):
        raise UserError(f"unknown binarisation {mode!r}: choose relative or absolute")
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}: choose train or test")
    test = clip_dataset(config, root, split, loaded.net.arch, train=False, dataset=dataset, shuffle_flow=shuffle_flow)
    net, text = loaded.net.to(device), loaded.text.to(device)
    metrics = evaluate(
        net, text, loaded.tokenizer, test, device, binarize=mode, batch_size=batch_size or config.eval_batch_size
    )
    return {
        "weights": str(weights),
        "data": str(root),
        "split": split,
        "dataset": dataset,
        "samples": len(test),
        "binarize": mode,
        "shuffle_flow": shuffle_flow,
        "metrics": metrics,
    }
