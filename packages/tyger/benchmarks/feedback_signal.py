"""Does Tyger's selection signal point at the molecules the task learner gets wrong? A round-0 diagnosis.

For each embedded task and seed (demo preset, as ``tyger-repro`` runs it): pre-train the querying module, draw
the initial 32 labels, train the task learner, fine-tune the querying module with L_FB, then on the unlabelled
pool compare, by Spearman rank correlation with the task learner's true per-molecule loss there:

- ``u_before`` / ``u_after``: the predicted loss u(z) before and after the round's fine-tuning (Tyger's
  informativeness a_u);
- ``u_on_labelled``: u(z) against its own training targets on the labelled molecules (does u fit them?);
- ``z_distance``: distance in z to the nearest labelled molecule (Tyger's representativeness d_u);
- ``feature_distance``: the same in the task learner's features (core-set's);
- ``ecfp_distance``: Tanimoto distance of ECFP4 to the nearest labelled molecule (MaxMin's).

    PYTHONPATH=shared/src:packages/tyger/src python packages/tyger/benchmarks/feedback_signal.py --seeds 3
"""

from __future__ import annotations

import argparse
import json

import torch

from tyger.config import build_config
from tyger.engine import (
    embed_pool,
    finetune_querying,
    initial_set,
    new_querying_module,
    predict,
    prepare_data,
    pretrain_querying,
    round_seed,
    train_task_learner,
)
from tyger.losses import tanimoto
from tyger.repro import SCALES


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = (x.argsort().argsort().double() for x in (a.flatten(), b.flatten()))
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def round_zero(dataset: str, seed: int, device: torch.device) -> dict[str, float]:
    config = build_config(
        "demo", dataset=dataset, selector="tyger", seed=seed, limit=SCALES["demo"]["limits"].get(dataset)
    )
    data = prepare_data(config)
    state, opt_state, _ = pretrain_querying(config, data, device)
    module = new_querying_module(config, data, device)
    module.load_state_dict(state)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    optimizer.load_state_dict(opt_state)
    labelled = initial_set(config, data, int(config.init_size))
    seed_0 = round_seed(seed, 0)
    task = train_task_learner(config, data.pool.subset(labelled), data.val, device, seed_0)
    unlabelled = sorted(set(range(len(data.pool))) - set(labelled))
    pool = data.pool.subset(unlabelled)
    outputs = predict(task.model, pool, device)  # standardised units for regression, as the loss wants
    true = data.spec.loss(outputs, pool.y, pool.mask, mean=task.mean, std=task.std, reduction="none")
    before = embed_pool(module, data, device)[1]
    finetune_querying(config, module, optimizer, data, device, labelled, task, seed_0)
    z, after = embed_pool(module, data, device)
    z = torch.nn.functional.normalize(z, dim=1)
    features = predict(task.model, data.pool, device, features=True)[1]
    bits = data.knowledge
    return {
        "u_before": spearman(before[unlabelled], true),
        "u_after": spearman(after[unlabelled], true),
        "u_on_labelled": spearman(after[labelled], task.sample_losses),
        "z_distance": spearman(torch.cdist(z[unlabelled], z[labelled]).min(1).values, true),
        "feature_distance": spearman(torch.cdist(features[unlabelled], features[labelled]).min(1).values, true),
        "ecfp_distance": spearman((1 - tanimoto(bits[unlabelled], bits[labelled])).min(1).values, true),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="chembl-reg,chembl-bin,nci-alerts")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    args = parser.parse_args()
    rows = {}
    for task in args.tasks.split(","):
        for seed in range(args.seeds):
            rows[f"{task}/{seed}"] = round_zero(task, seed, torch.device("cpu"))
            print(task, seed, {k: round(v, 3) for k, v in rows[f"{task}/{seed}"].items()}, flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
