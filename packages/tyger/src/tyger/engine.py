"""The active-learning loop of Tyger (arXiv 2205.11279) and its training steps.

:func:`fit` runs one simulated pool-based AL run (the labels of the pool are revealed on request):

0. read the molecules, split them into pool / validation / test, featurise once (graphs, SMILES tokens, ECFP4);
1. pre-train the querying module on the pool with L_trans + lambda_DK L_DK (no labels: :func:`pretrain_querying`,
   cached in a file so runs on the same data and seed share it);
2. draw the initial labelled set L0;
3. each round r = 0..R: re-initialise the task learner (seeded by (seed, r)) and train it on L with early stopping
   on validation (:func:`train_task_learner`, recording each molecule's running-mean loss for L_FB), evaluate it
   on the test set, and unless r = R fine-tune the querying module with the full L_Q (Tyger only), select b
   molecules from the unlabelled pool (:func:`tyger.selection.select_scored`) and reveal their labels.

Files of a run (``out``): ``config.json``; ``metrics.jsonl`` (one record per round: labelled count, test and
validation metric, seconds); ``selected.jsonl`` (round, pool index, SMILES, score); ``curve.csv``; a checkpoint
per round (``checkpoint-*.pt``: querying module and its optimiser, task learner, labelled indices, curve, RNG), so
``resume=True`` continues exactly; ``results.json`` (curve, AULC, final metric). The pre-trained querying module
is ``pretrained.pt`` unless the caller names a shared file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from shared import distributed
from shared.checkpoint import (
    atomic_write,
    latest,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    save_json,
    save_training_checkpoint,
    set_rng_state,
)
from shared.errors import UserError
from shared.logging import MetricsWriter, get_logger
from tyger.chem import SmilesTokenizer, collate_graphs, descriptors, ecfp4, ecfp4_bitvects
from tyger.config import LoopConfig, plain, size_of
from tyger.data import (
    MoleculeDataset,
    TaskSpec,
    load_embedded,
    random_split,
    read_molecule_csv,
    read_molecule_sdf,
    scaffold_split,
)
from tyger.losses import feedback_rank_loss, standardize_targets
from tyger.metrics import aulc, reconstruction_accuracy, smiles_validity
from tyger.models import LossPredictionModule, QueryingModule, TaskLearner, querying_module, task_learner
from tyger.selection import kcenter_greedy, select_scored

__all__ = [
    "ALData",
    "TaskResult",
    "check_config",
    "embed_pool",
    "evaluate",
    "finetune_querying",
    "fit",
    "initial_set",
    "load_dataset",
    "new_querying_module",
    "predict",
    "prepare_data",
    "pretrain_querying",
    "querying_epoch",
    "querying_report",
    "round_seed",
    "selection_inputs",
    "train_task_learner",
]

EMBED_CHUNK = 1024  # molecules per forward pass when embedding or predicting a whole set


def round_seed(seed: int, round_: int) -> int:
    """The seed of round ``round_`` of a run seeded ``seed`` (task-learner init, shuffling, dropout)."""
    return seed * 10_007 + round_ + 3


# --- data -------------------------------------------------------------------------------------------------------


@dataclass
class ALData:
    """A split dataset with everything featurised once: ``pool``/``val``/``test`` are row subsets of ``dataset``."""

    dataset: MoleculeDataset
    pool_rows: list[int]
    val_rows: list[int]
    test_rows: list[int]
    pool: MoleculeDataset
    val: MoleculeDataset
    test: MoleculeDataset
    tokenizer: SmilesTokenizer
    tokens: torch.Tensor  # (P, T) pool SMILES ids with <bos>/<eos>; all <pad> for molecules over max_tokens
    fingerprints: list = field(repr=False)  # RDKit ECFP4 bit vectors of the pool (maxmin-ecfp)
    knowledge: torch.Tensor | None = None  # ECFP4 bits or standardised descriptors of the pool (L_DK)

    @property
    def spec(self) -> TaskSpec:
        return self.dataset.spec


def load_dataset(config: LoopConfig) -> MoleculeDataset:
    """The molecules a configuration names: its ``data`` file, else the embedded set."""
    if config.data is not None:
        if config.data.suffix.lower() in (".sdf", ".sd"):
            return read_molecule_sdf(config.data, config.targets, config.task_type)
        return read_molecule_csv(config.data, config.smiles_col, config.targets, config.task_type)
    dataset = load_embedded(config.dataset, limit=config.limit)
    if config.task_type is not None and config.task_type != dataset.spec.task_type:
        raise UserError(f"{config.dataset} is a {dataset.spec.task_type} task; drop --task-type {config.task_type}")
    return dataset


def prepare_data(config: LoopConfig, dataset: MoleculeDataset | None = None) -> ALData:
    """Read (unless ``dataset`` is given), split 80/10/10 and featurise once."""
    dataset = load_dataset(config) if dataset is None else dataset
    if config.resolved_split == "scaffold":
        pool_rows, val_rows, test_rows = scaffold_split(dataset.smiles)
    else:
        pool_rows, val_rows, test_rows = random_split(len(dataset), seed=config.seed)
    for name, rows in (("validation", val_rows), ("test", test_rows)):
        if len(rows) < 2:
            raise UserError(
                f"{config.source()}: the {config.resolved_split} split leaves {len(rows)} {name} molecules of "
                f"{len(dataset)}: use more data"
            )
    return featurise_split(config, dataset, pool_rows, val_rows, test_rows)


def featurise_split(
    config: LoopConfig,
    dataset: MoleculeDataset,
    pool_rows: Sequence[int],
    val_rows: Sequence[int],
    test_rows: Sequence[int],
) -> ALData:
    """Graphs of every molecule, and for the pool its SMILES tokens, ECFP4 and the L_DK targets."""
    dataset.graphs()
    pool, val, test = dataset.subset(pool_rows), dataset.subset(val_rows), dataset.subset(test_rows)
    tokenizer = SmilesTokenizer.build(pool.smiles)
    ids = [tokenizer.encode(s) for s in pool.smiles]
    long = [len(i) > config.max_tokens + 2 for i in ids]
    if any(long):
        get_logger().info(f"{sum(long)} pool molecules longer than {config.max_tokens} tokens: no translation loss")
    width = max((len(i) for i, skip in zip(ids, long, strict=True) if not skip), default=2)
    tokens = torch.zeros(len(ids), width, dtype=torch.long)
    for row, (seq, skip) in enumerate(zip(ids, long, strict=True)):
        if not skip:
            tokens[row, : len(seq)] = torch.tensor(seq)
    mols = pool.mols()
    bitvects = ecfp4_bitvects(mols)
    knowledge = None
    if config.dk == "fingerprint":
        knowledge = ecfp4(mols)
    elif config.dk == "descriptors":
        raw = descriptors(mols)
        knowledge = (raw - raw.mean(0)) / raw.std(0).clamp_min(1e-6)
    rows = list(pool_rows), list(val_rows), list(test_rows)
    return ALData(dataset, *rows, pool, val, test, tokenizer, tokens, bitvects, knowledge)


def _batches(n: int, size: int, generator: torch.Generator | None, minimum: int = 2) -> list[torch.Tensor]:
    """Index batches over ``range(n)`` (shuffled with ``generator``); a last batch under ``minimum`` joins the one
    before (BatchNorm needs two molecules per process)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(order.split(size))
    if len(batches) > 1 and len(batches[-1]) < minimum:
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    return batches


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# --- the task learner -------------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    """A trained task learner (best on validation) and what the round needs from its training."""

    model: TaskLearner
    mean: torch.Tensor  # regression: the labelled set's per-task mean and std (identity otherwise)
    std: torch.Tensor
    sample_losses: torch.Tensor  # running mean of each training molecule's loss over the epochs (L_FB targets)
    val_metric: float
    epochs: int
    loss_module: LossPredictionModule | None = None


@torch.no_grad()
def predict(
    model: TaskLearner,
    data: MoleculeDataset,
    device: torch.device,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    features: bool = False,
):
    """Outputs in label units (regression de-standardised; logits otherwise), (N, K); with ``features`` also the
    pooled features (N, H) and each layer's pooled features."""
    model.eval()
    outs, feats, layers = [], [], []
    for start in range(0, len(data), EMBED_CHUNK):
        graphs = data.batch(range(start, min(start + EMBED_CHUNK, len(data)))).to(device)
        out, pooled, per_layer = model.forward_features(graphs)
        outs.append(out.float().cpu())
        feats.append(pooled.float().cpu())
        layers.append([x.float().cpu() for x in per_layer])
    out = torch.cat(outs)
    if data.spec.task_type == "regression" and mean is not None:
        out = out * std + mean
    if not features:
        return out
    return out, torch.cat(feats), [torch.cat(parts) for parts in zip(*layers, strict=True)]


def evaluate(model: TaskLearner, data: MoleculeDataset, device: torch.device, mean=None, std=None) -> float:
    """The task's metric (RMSE, mean ROC-AUC or accuracy) of ``model`` on ``data``."""
    return data.spec.metric(predict(model, data, device, mean, std), data.y, data.mask)


def _better(a: float, b: float, higher: bool) -> bool:
    if math.isnan(a):
        return False
    return math.isnan(b) or (a > b if higher else a < b)


def train_task_learner(
    config: LoopConfig,
    train: MoleculeDataset,
    val: MoleculeDataset,
    device: torch.device,
    seed: int,
    loss_module: bool = False,
) -> TaskResult:
    """Train a fresh task learner (initialised from ``seed``) on ``train`` for up to ``task_epochs`` epochs,
    keeping the weights best on ``val``'s metric and stopping after ``patience`` epochs without improvement.

    Each molecule's per-epoch loss is averaged over the epochs (the final-epoch loss alone is ~0 on training
    data) for L_FB. ``loss_module`` also trains the loss-prediction module of Yoo & Kweon (CVPR 2019) on the
    detached per-layer features, for the ``learning-loss`` baseline.
    """
    if len(train) < 2:
        raise UserError(f"the task learner needs at least 2 labelled molecules, got {len(train)}")
    spec = train.spec
    torch.manual_seed(seed)
    model = distributed.wrap_model(task_learner(config.model, spec.n_outputs), device)
    rank, world = distributed.get_rank(), distributed.get_world_size()
    predictor = None
    params = list(model.parameters())
    if loss_module:  # its own RNG stream: the task learner's dropout stays the other methods' (same round-0 model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            predictor = LossPredictionModule([model.encoder.hidden] * len(model.encoder.convs)).to(device)
        params += list(predictor.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    if spec.task_type == "regression":
        mean, std = standardize_targets(train.y, train.mask)
    else:
        mean, std = torch.zeros(train.y.shape[1]), torch.ones(train.y.shape[1])
    y, mask = train.y.to(device), train.mask.to(device)
    mean_d, std_d = mean.to(device), std.to(device)
    generator = _generator(seed)
    loss_sum = torch.zeros(len(train))
    best, best_state, best_epoch, epochs = math.nan, None, 0, 0
    for epoch in range(1, config.task_epochs + 1):
        model.train()
        epoch_losses = torch.zeros(len(train))
        for batch in _batches(len(train), config.task_batch_size * world, generator, minimum=2 * world):
            index = batch[rank::world]  # under torchrun each process takes its share of every global batch
            graphs = train.batch(index.tolist()).to(device)
            out, _, layers = model(graphs, features=True)
            per_mol = spec.loss(out, y[index], mask[index], mean=mean_d, std=std_d, reduction="none")
            loss = per_mol.mean()
            if predictor is not None:
                loss = loss + feedback_rank_loss(predictor([x.detach() for x in layers]), per_mol.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_losses[index] = per_mol.detach().float().cpu()
        loss_sum += distributed.all_reduce_sum(epoch_losses) if world > 1 else epoch_losses
        epochs = epoch
        metric = evaluate(distributed.unwrap_model(model), val, device, mean, std)  # every process: the same
        if best_state is None or _better(metric, best, spec.higher_is_better):
            best, best_epoch = metric, epoch
            best_state = {k: v.detach().clone() for k, v in distributed.unwrap_model(model).state_dict().items()}
            if predictor is not None:
                best_state |= {f"predictor.{k}": v.detach().clone() for k, v in predictor.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
    model = distributed.unwrap_model(model)
    model.load_state_dict({k: v for k, v in best_state.items() if not k.startswith("predictor.")})
    if predictor is not None:
        predictor.load_state_dict({k[10:]: v for k, v in best_state.items() if k.startswith("predictor.")})
    return TaskResult(model, mean, std, loss_sum / epochs, best, epochs, predictor)


def repeat_evaluations(
    config: LoopConfig, data: ALData, train: MoleculeDataset, device: torch.device, seed: int
) -> list[float]:
    """Test metrics of ``config.eval_repeats - 1`` more task learners trained on ``train`` from other
    initialisations, for a less noisy learning curve. They run on forked RNG streams, so the rest of the
    round (fine-tuning, selection) sees the same random state as with one task learner."""
    out = []
    for k in range(1, config.eval_repeats):
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            extra = train_task_learner(config, train, data.val, device, seed + 1_000_003 * k)
            out.append(evaluate(extra.model, data.test, device, extra.mean, extra.std))
    return out


# --- the querying module ----------------------------------------------------------------------------------------


def new_querying_module(config: LoopConfig, data: ALData, device: torch.device) -> QueryingModule:
    """A freshly initialised querying module of the configuration's sizes and objectives, for ``data``'s vocabulary."""
    return querying_module(config.model, len(data.tokenizer), dk=config.dk, fb=config.fb).to(device)


def querying_epoch(
    config: LoopConfig,
    module: QueryingModule,
    optimizer: torch.optim.Optimizer,
    data: ALData,
    device: torch.device,
    generator: torch.Generator,
    labelled: Sequence[int] = (),
    feedback: torch.Tensor | None = None,
    task_features: torch.Tensor | None = None,
) -> dict[str, float]:
    """One pass over the pool: each step one pool batch (L_trans, L_DK) and, given labelled molecules with their
    feedback targets (or task-learner features), one labelled batch for L_FB; for ``relation-pool``,
    ``task_features`` cover the whole pool and L_FB is taken on the pool batch. Returns the mean terms."""
    module.train()
    sums: dict[str, float] = {}
    steps = 0
    labelled = list(labelled)
    use_fb = config.fb in ("loss-rank", "relation") and len(labelled) >= 2
    pool_fb = config.fb == "relation-pool" and task_features is not None
    for index in _batches(len(data.pool), config.query_batch_size, generator):
        graphs = data.pool.batch(index.tolist()).to(device)
        tokens = None
        if config.translation:
            tokens = data.tokens[index]
            tokens = tokens[:, : int((tokens != 0).sum(1).max().clamp_min(2))].to(device)
        knowledge = None if data.knowledge is None else data.knowledge[index].to(device)
        kwargs = {"task_features": task_features[index].to(device)} if pool_fb else {}
        if use_fb:
            pick = torch.randperm(len(labelled), generator=generator)[: config.query_batch_size]
            rows = [labelled[i] for i in pick.tolist()]
            kwargs = {"labelled_graphs": data.pool.batch(rows).to(device)}
            if config.fb == "loss-rank":
                kwargs["feedback_targets"] = feedback[pick].to(device)
            else:
                kwargs["task_features"] = task_features[pick].to(device)
        terms = module.loss(graphs, tokens, knowledge, lambda_dk=config.lambda_dk, lambda_fb=config.lambda_fb, **kwargs)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(module.decoder.parameters(), config.clip)
        optimizer.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        steps += 1
    return {k: v / max(steps, 1) for k, v in sums.items()}


@torch.no_grad()
def querying_report(module: QueryingModule, data: ALData, device: torch.device, limit: int = 200) -> dict:
    """Greedy decoding of held-out molecules (validation then test, at most ``limit``): SMILES validity, exact
    reconstruction (canonical equality) and teacher-forced token accuracy."""
    held = data.val.smiles + data.test.smiles
    rows = list(range(min(limit, len(held))))
    smiles = [held[i] for i in rows]
    module.eval()
    all_graphs = data.val.graphs() + data.test.graphs()
    graphs = collate_graphs([all_graphs[i] for i in rows]).to(device)
    tok = data.tokenizer
    ids = module.decode_greedy(graphs, tok.bos_id, tok.eos_id, max_len=int(data.tokens.shape[1]))
    decoded = [tok.decode(row) for row in ids.tolist()]
    target = tok.encode_batch(smiles).to(device)
    logits = module.decoder(module.embed(graphs), target[:, :-1])
    present = target[:, 1:] != tok.pad_id
    correct = (logits.argmax(-1) == target[:, 1:]) & present
    return {
        "molecules": len(rows),
        "validity": smiles_validity(decoded),
        "reconstruction": reconstruction_accuracy(decoded, smiles),
        "token_accuracy": float(correct.sum() / present.sum().clamp_min(1)),
        "examples": [{"target": t, "decoded": d} for t, d in list(zip(smiles, decoded, strict=True))[:5]],
    }


def pretrain_querying(
    config: LoopConfig, data: ALData, device: torch.device, cache: Path | None = None
) -> tuple[dict, dict, dict]:
    """Pre-train the querying module on the pool with L_trans + lambda_DK L_DK (no labels).

    Returns the module's and its Adam optimiser's state dicts and a report (losses per epoch; held-out
    reconstruction before and after). Label-free, so it depends only on the data, split, seed, sizes and the
    L_trans/L_DK options. ``cache`` is a file, read when it was recorded with the same settings and pool
    molecules, else computed and written there; or a folder, where each setting gets its own file (so every
    Tyger run on the same pool and seed shares one pre-training, whatever the labels).
    """
    key = {
        "pool": hashlib.sha1("\n".join(data.pool.smiles).encode()).hexdigest(),
        "seed": config.seed,
        "model": config.model,
        "dk": config.dk,
        "translation": config.translation,
        "epochs": config.pretrain_epochs,
        "batch": config.query_batch_size,
        "lr": config.lr,
        "clip": config.clip,
        "max_tokens": config.max_tokens,
        "lambda_dk": config.lambda_dk,
        "vocab": data.tokenizer.itos,
    }
    if cache is not None and Path(cache).is_dir():
        cache = Path(cache) / f"querying-{hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]}.pt"
    if cache is not None and Path(cache).is_file():
        saved = load_checkpoint(cache)
        if json.loads(saved["key"]) == key:
            get_logger().info(f"querying module: reusing the pre-training in {cache}")
            return saved["model"], saved["optimizer"], json.loads(saved["report"])
    torch.manual_seed(round_seed(config.seed, -1))
    module = new_querying_module(config, data, device)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    report: dict = {"before": querying_report(module, data, device), "epochs": []}
    generator = _generator(round_seed(config.seed, -1))
    started = time.perf_counter()
    for _ in range(config.pretrain_epochs):
        report["epochs"].append(querying_epoch(config, module, optimizer, data, device, generator))
    report["seconds"] = time.perf_counter() - started
    report["after"] = querying_report(module, data, device)
    state, opt_state = module.state_dict(), optimizer.state_dict()
    if cache is not None:
        save_checkpoint(
            cache, {"key": json.dumps(key), "model": state, "optimizer": opt_state, "report": json.dumps(report)}
        )
    return state, opt_state, report


def finetune_querying(
    config: LoopConfig,
    module: QueryingModule,
    optimizer: torch.optim.Optimizer,
    data: ALData,
    device: torch.device,
    labelled: Sequence[int],
    task: TaskResult,
    seed: int,
) -> list[dict[str, float]]:
    """Fine-tune the querying module ``finetune_epochs`` epochs with the full L_Q = L_trans + lambda_DK L_DK +
    lambda_FB L_FB; the feedback targets are the task learner's running-mean losses on the labelled molecules
    (loss-rank) or its pooled features on the labelled molecules (relation) or on the whole pool (relation-pool)."""
    features = None
    if config.fb == "relation":
        _, features, _ = predict(task.model, data.pool.subset(labelled), device, features=True)
    elif config.fb == "relation-pool":
        _, features, _ = predict(task.model, data.pool, device, features=True)
    generator = _generator(seed)
    return [
        querying_epoch(config, module, optimizer, data, device, generator, labelled, task.sample_losses, features)
        for _ in range(config.finetune_epochs)
    ]


# --- selection --------------------------------------------------------------------------------------------------


@torch.no_grad()
def embed_pool(module: QueryingModule, data: ALData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """z (P, d_z) and the predicted task-learner loss u(z) (P,) of every pool molecule, in eval mode."""
    module.eval()
    zs, losses = [], []
    for start in range(0, len(data.pool), EMBED_CHUNK):
        graphs = data.pool.batch(range(start, min(start + EMBED_CHUNK, len(data.pool)))).to(device)
        z = module.embed(graphs)
        zs.append(z.float().cpu())
        losses.append(module.predict_loss(z).float().cpu())
    return torch.cat(zs), torch.cat(losses)


def _probabilities(outputs: torch.Tensor, task_type: str) -> torch.Tensor:
    return outputs.softmax(-1) if task_type == "multiclass" else outputs.sigmoid()


def selection_inputs(
    config: LoopConfig,
    data: ALData,
    task: TaskResult,
    module: QueryingModule | None,
    device: torch.device,
    seed: int,
) -> dict:
    """What the configured selector reads, computed for the whole pool (indices are pool positions)."""
    name, task_type = config.selector, data.spec.task_type
    inputs: dict = {"task_type": task_type, "seed": seed}
    if name == "tyger":
        z, predicted = embed_pool(module, data, device)
        # u(z) is trained by the loss-rank feedback only; under relation or no feedback it is an untrained head,
        # so Tyger is plain k-center on z there
        predicted = predicted if config.fb == "loss-rank" else None
        inputs |= {"embeddings": z, "predicted_loss": predicted}
        inputs |= {"beta": config.beta, "eps": config.eps, "gamma": config.gamma}
    elif name in ("coreset", "entropy", "margin", "badge", "learning-loss"):
        outputs, features, layers = predict(task.model, data.pool, device, task.mean, task.std, features=True)
        inputs |= {"features": features, "probs": _probabilities(outputs, task_type)}
        if name == "learning-loss":
            task.loss_module.eval()
            with torch.no_grad():
                inputs["predicted_loss"] = torch.cat(
                    [
                        task.loss_module([x[i : i + EMBED_CHUNK].to(device) for x in layers]).cpu()
                        for i in range(0, len(data.pool), EMBED_CHUNK)
                    ]
                )
    elif name == "bald":
        samples = []
        for start in range(0, len(data.pool), EMBED_CHUNK):
            graphs = data.pool.batch(range(start, min(start + EMBED_CHUNK, len(data.pool)))).to(device)
            samples.append(task.model.mc_predict(graphs, config.mc_samples).float().cpu())
        mc = torch.cat(samples, 1)
        inputs["mc_outputs"] = mc if task_type == "regression" else _probabilities(mc, task_type)
    elif name == "maxmin-ecfp":
        inputs["fingerprints"] = data.fingerprints
    return inputs


def _check_supported(config: LoopConfig, spec: TaskSpec) -> None:
    if config.selector in ("entropy", "margin", "badge") and spec.task_type == "regression":
        raise UserError(
            f"the {config.selector!r} selector needs class probabilities and supports only binary, multilabel and "
            "multiclass tasks, not regression: use tyger, random, coreset, bald, learning-loss or maxmin-ecfp"
        )


# --- the loop ---------------------------------------------------------------------------------------------------


def initial_set(config: LoopConfig, data: ALData, size: int) -> list[int]:
    """L0: ``size`` pool positions, seeded at random or (``init="kcenter"``) by k-center on ECFP4 bits."""
    if config.init == "kcenter":
        bits = data.knowledge if config.dk == "fingerprint" else ecfp4(data.pool.mols())
        return kcenter_greedy(bits.float(), [], range(len(data.pool)), size)[0]
    rng = np.random.default_rng(round_seed(config.seed, -2))
    return sorted(int(i) for i in rng.choice(len(data.pool), size=size, replace=False))


def _write_curve(out: Path, curve: list[dict], pool_size: int) -> None:
    def write(handle) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["round", "labelled", "fraction", "metric"])
        for c in curve:
            writer.writerow([c["round"], c["labelled"], f"{c['labelled'] / pool_size:.6f}", repr(c["test"])])

    atomic_write(out / "curve.csv", write, binary=False)


def _rewrite_selected(path: Path, last_round: int) -> None:
    """Keep the records of rounds up to ``last_round`` (what the checkpoint knows)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines(keepends=True) if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["round"] <= last_round]
    atomic_write(path, lambda f: f.write("".join(kept)), binary=False)


def check_config(config: LoopConfig) -> None:
    """Refuse a configuration that cannot run on its data (read and split, not featurised): a missing or bad
    file, a selector that does not support the task type, a budget larger than the pool."""
    dataset = load_dataset(config)
    _check_supported(config, dataset.spec)
    if config.resolved_split == "scaffold":
        pool_rows = scaffold_split(dataset.smiles)[0]
    else:
        pool_rows = random_split(len(dataset), seed=config.seed)[0]
    sizes(config, len(pool_rows))


def sizes(config: LoopConfig, pool_size: int) -> tuple[int, int]:
    """(b0, b) for a pool, refused with a clear message when the rounds would need more than the pool."""
    b0 = size_of(config.init_size, pool_size, config.min_batch)
    b = size_of(config.budget, pool_size, config.min_batch)
    need = b0 + config.rounds * b
    if need > pool_size:
        raise UserError(
            f"{b0} initial labels + {config.rounds} rounds x {b} = {need} molecules, but the pool holds only "
            f"{pool_size}: lower --budget, --init-size or --rounds"
        )
    if b0 < 2:
        raise UserError(f"the initial labelled set needs at least 2 molecules, got {b0}")
    return b0, b


def fit(
    config: LoopConfig,
    out: str | Path,
    device: torch.device,
    *,
    resume: bool = False,
    quiet: bool = False,
    pretrained: str | Path | None = None,
    stop_after_round: int | None = None,
    data: ALData | None = None,
) -> dict:
    """One simulated active-learning run into ``out`` (see the module docstring for its files).

    ``pretrained``: the file or folder of the pre-trained querying module, shared across runs (default
    ``out/pretrained.pt``; see :func:`pretrain_querying`). ``stop_after_round`` ends the run after that round's
    checkpoint (to test ``resume``). ``data``: an already prepared :class:`ALData` of this configuration.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = get_logger()
    started = time.perf_counter()
    data = prepare_data(config) if data is None else data
    spec = data.spec
    _check_supported(config, spec)
    pool_size = len(data.pool)
    b0, b = sizes(config, pool_size)
    if not resume:
        for name in ("metrics.jsonl", "selected.jsonl", "results.json", "curve.csv"):
            (out / name).unlink(missing_ok=True)
    save_json(out / "config.json", plain(config) | {"pool": pool_size, "val": len(data.val), "test": len(data.test)})
    metrics = MetricsWriter(out / "metrics.jsonl")
    selected_path = out / "selected.jsonl"

    module = optimizer = None
    pretrain_report = None
    if config.selector == "tyger":
        state, opt_state, pretrain_report = pretrain_querying(
            config, data, device, Path(pretrained) if pretrained else out / "pretrained.pt"
        )
        module = new_querying_module(config, data, device)
        module.load_state_dict(state)
        optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
        optimizer.load_state_dict(opt_state)

    start_round, curve = 0, []
    if resume and latest(out) is not None:
        saved = load_checkpoint(latest(out))
        labelled = [int(i) for i in saved["labelled"].tolist()]
        curve = json.loads(saved["curve"])
        start_round = int(saved["round"]) + 1
        if module is not None:
            module.load_state_dict(saved["querying"])
            optimizer.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"])
        metrics.rewind("round", start_round - 1)
        _rewrite_selected(selected_path, start_round - 1)
        log.info(f"resuming {out} after round {start_round - 1} ({len(labelled)} labelled)")
    else:
        labelled = initial_set(config, data, b0)

    for r in range(start_round, config.rounds + 1):
        t0 = time.perf_counter()
        seed = round_seed(config.seed, r)
        train = data.pool.subset(labelled)
        task = train_task_learner(config, train, data.val, device, seed, loss_module=config.selector == "learning-loss")
        test_metric = evaluate(task.model, data.test, device, task.mean, task.std)
        repeats = [test_metric, *repeat_evaluations(config, data, train, device, seed)]
        test_metric = sum(repeats) / len(repeats)
        if math.isnan(test_metric):
            log.warning(
                f"round {r}: the test {spec.metric_name} is undefined (a test label column holds one class only): "
                "use more data or another split"
            )
        point = {"round": r, "labelled": len(labelled), "test": test_metric, "val": task.val_metric}
        if len(repeats) > 1:
            point["test_repeats"] = repeats
        curve.append(point)
        record = point | {"epochs": task.epochs}
        if r < config.rounds:
            if module is not None:
                terms = finetune_querying(config, module, optimizer, data, device, labelled, task, seed)
                if terms:
                    record |= {f"q_{k}": v for k, v in terms[-1].items()}
            candidates = sorted(set(range(pool_size)) - set(labelled))
            inputs = selection_inputs(config, data, task, module, device, seed)
            picks, scores = select_scored(config.selector, labelled, candidates, b, **inputs)
            if len(set(picks)) != b or set(picks) & set(labelled):
                raise RuntimeError(f"selector {config.selector} returned an invalid batch")
            with selected_path.open("a", encoding="utf-8") as handle:
                for rank, (i, s) in enumerate(zip(picks, scores, strict=True)):
                    line = {"round": r, "pool_index": i, "row": data.pool.rows[i] if data.pool.rows else None}
                    line |= {"smiles": data.pool.smiles[i], "score": s, "rank": rank}
                    handle.write(json.dumps(line) + "\n")
            labelled = labelled + list(picks)
        record["seconds"] = time.perf_counter() - t0
        metrics.write(record)
        if not quiet:
            log.info(
                f"{config.selector} round {r}: {point['labelled']} labelled, test {spec.metric_name} {test_metric:.4f}"
            )
        save_training_checkpoint(
            out,
            r + 1,
            {
                "round": r,
                "labelled": torch.tensor(labelled),
                "curve": json.dumps(curve),
                "querying": module.state_dict() if module is not None else {},
                "optimizer": optimizer.state_dict() if optimizer is not None else {},
                "task": task.model.state_dict(),
                "rng": rng_state(),
            },
            keep=1,
        )
        if stop_after_round is not None and r >= stop_after_round and r < config.rounds:
            return {"stopped_after_round": r, "curve": curve}

    _write_curve(out, curve, pool_size)
    x = [c["labelled"] / pool_size for c in curve]
    values = [c["test"] for c in curve]
    results = {
        "selector": config.selector,
        "source": config.source(),
        "task_type": spec.task_type,
        "metric": spec.metric_name,
        "higher_is_better": spec.higher_is_better,
        "pool": pool_size,
        "initial": b0,
        "budget": b,
        "rounds": config.rounds,
        "curve": curve,
        "aulc": aulc(x, values),
        # the same area on the validation split (the selection-driving learner's early-stopping metric): for
        # choosing settings without looking at test
        "aulc_val": aulc(x, [c["val"] for c in curve]),
        "final": values[-1],
        "labelled": labelled,
        "seconds": time.perf_counter() - started,
    }
    if pretrain_report is not None:
        results["querying"] = {k: pretrain_report[k] for k in ("before", "after")}
    save_json(out / "results.json", results)
    return results


# --- single steps for the command line --------------------------------------------------------------------------


def read_indices(path: str | Path, limit: int) -> list[int]:
    """Pool positions, one integer per line (``#`` comments and blank lines ignored), each below ``limit``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"index file not found: {path}")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#")[0].strip().split(",")[0].strip()
        if not text:
            continue
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"{path} line {n}: {text!r} is not a pool index (one integer per line)") from None
        if not 0 <= value < limit:
            raise UserError(f"{path} line {n}: pool index {value} outside 0..{limit - 1}")
        out.append(value)
    if len(set(out)) < len(out):
        raise UserError(f"{path} names a pool index twice")
    if len(out) < 2:
        raise UserError(f"{path} names {len(out)} molecules: at least 2 labelled molecules are needed")
    return out


def train_and_evaluate(
    config: LoopConfig, out: str | Path, device: torch.device, labelled: Sequence[int] | str | Path | None = None
) -> dict:
    """Train one task learner on the pool molecules ``labelled`` (pool positions, or a file of them for
    :func:`read_indices`; default: the whole pool), early-stopped on the validation split; writes
    ``config.json``, ``final.pt`` (weights, target mean/std) and ``results.json``."""
    out = Path(out)
    data = prepare_data(config)
    if isinstance(labelled, str | Path):
        labelled = read_indices(labelled, len(data.pool))
    rows = list(range(len(data.pool))) if labelled is None else list(labelled)
    if len(rows) < 2 * distributed.get_world_size():
        raise UserError(f"{len(rows)} labelled molecules are too few for {distributed.get_world_size()} processes")
    if distributed.is_main_process():
        save_json(out / "config.json", plain(config) | {"labelled": len(rows)})
    started = time.perf_counter()
    task = train_task_learner(config, data.pool.subset(rows), data.val, device, round_seed(config.seed, 0))
    spec = data.spec
    results = {
        "source": config.source(),
        "task_type": spec.task_type,
        "metric": spec.metric_name,
        "higher_is_better": spec.higher_is_better,
        "labelled": len(rows),
        "pool": len(data.pool),
        "epochs": task.epochs,
        "val": task.val_metric,
        "test": evaluate(task.model, data.test, device, task.mean, task.std),
        "seconds": time.perf_counter() - started,
    }
    save_checkpoint(out / "final.pt", {"model": task.model.state_dict(), "mean": task.mean, "std": task.std})
    if distributed.is_main_process():
        save_json(out / "results.json", results)
    return results


def select_round(
    config: LoopConfig,
    labelled: MoleculeDataset,
    candidates: Sequence[str],
    budget: int,
    out: str | Path,
    device: torch.device,
) -> list[dict]:
    """One real selection round: the measured molecules ``labelled`` and the unmeasured ``candidates`` (canonical
    SMILES) form the pool; 15% of the labelled molecules (at least 2) early-stop the task learner. Returns the
    ``budget`` picks in order (candidate index, SMILES, score, rank) and writes ``picks.csv``."""
    out = Path(out)
    known = set(labelled.smiles)
    fresh = [s for s in candidates if s not in known]
    if len(fresh) < len(candidates):
        get_logger().info(f"{len(candidates) - len(fresh)} candidates are already labelled and left out")
    if budget > len(fresh):
        raise UserError(f"--budget {budget} is larger than the {len(fresh)} unlabelled candidates: lower it")
    if len(labelled) < 10:
        raise UserError(f"a selection round needs at least 10 labelled molecules, got {len(labelled)}")
    spec = labelled.spec
    _check_supported(config, spec)
    n_lab = len(labelled)
    pool = MoleculeDataset(
        labelled.smiles + list(fresh),
        torch.cat([labelled.y, torch.zeros(len(fresh), labelled.y.shape[1])]),
        torch.cat([labelled.mask, torch.zeros(len(fresh), labelled.mask.shape[1], dtype=torch.bool)]),
        spec,
    )
    order = np.random.default_rng(config.seed).permutation(n_lab)
    n_val = max(2, round(0.15 * n_lab))
    val_rows = sorted(int(i) for i in order[:n_val])
    data = featurise_split(config, pool, range(len(pool)), val_rows, val_rows)
    seed = round_seed(config.seed, 0)
    train_rows = sorted(int(i) for i in order[n_val:])
    task = train_task_learner(
        config, data.pool.subset(train_rows), data.val, device, seed, loss_module=config.selector == "learning-loss"
    )
    module = None
    if config.selector == "tyger":
        state, opt_state, _ = pretrain_querying(config, data, device, out / "pretrained.pt")
        module = new_querying_module(config, data, device)
        module.load_state_dict(state)
        optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
        optimizer.load_state_dict(opt_state)
        # the feedback targets are indexed by the task learner's training molecules
        finetune_querying(config, module, optimizer, data, device, train_rows, task, seed)
    inputs = selection_inputs(config, data, task, module, device, seed)
    picks, scores = select_scored(config.selector, list(range(n_lab)), list(range(n_lab, len(pool))), budget, **inputs)
    rows = [
        {"candidate": i - n_lab, "smiles": pool.smiles[i], "score": s, "rank": rank}
        for rank, (i, s) in enumerate(zip(picks, scores, strict=True), 1)
    ]

    def write(handle) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["candidate", "smiles", "score", "rank"])
        for row in rows:
            score = "" if row["score"] is None else row["score"]
            writer.writerow([row["candidate"], row["smiles"], score, row["rank"]])

    atomic_write(out / "picks.csv", write, binary=False)
    save_json(out / "config.json", plain(config) | {"labelled": n_lab, "candidates": len(fresh), "budget": budget})
    return rows
