"""``tyger-bench``: what Tyger costs as the pool grows.

Three measurements on real molecules (the embedded sets, repeated to reach large pools; featurised once):

- featurisation: molecules/s from SMILES to batched graphs (:func:`tyger.chem.featurize` + collation);
- querying-module training: molecules/s of one epoch of L_trans + L_DK (graph encoder, SMILES decoder);
- one active-learning round at each pool size: train the task learner on the labelled set, embed the pool with
  the querying module, select a batch with the Tyger rule.

Memory of the selection: the pool embeddings (P x d_z floats) and the running nearest-centre distances (P), plus
one block of at most ``CHUNK x CHUNK`` distances at a time (:data:`tyger.selection.CHUNK`); no P x P matrix is
built, so 100k molecules need about P x d_z x 4 bytes (26 MB at d_z = 64) on top of the graphs.
"""

from __future__ import annotations

import time

import torch

from shared.logging import get_logger
from tyger.chem import SmilesTokenizer, collate_graphs, ecfp4, featurize
from tyger.config import build_config
from tyger.data import MoleculeDataset, TaskSpec, load_embedded
from tyger.engine import EMBED_CHUNK, featurise_split, querying_epoch, train_task_learner
from tyger.models import querying_module
from tyger.selection import select_tyger

POOLS = (1_000, 10_000, 100_000)
LABELLED = 64


def _molecules() -> list[str]:
    """The unique molecules of the embedded sets (about 6,000)."""
    smiles = load_embedded("chembl-reg").smiles + load_embedded("nci-alerts").smiles
    return list(dict.fromkeys(smiles))


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def benchmark(
    device: torch.device,
    *,
    pools: tuple[int, ...] | list[int] = POOLS,
    molecules: int = 1000,
    model: str = "demo",
    budget: int = 32,
) -> dict:
    """Throughputs and round seconds (see the module docstring)."""
    log = get_logger()
    unique = _molecules()
    sample = [unique[i % len(unique)] for i in range(molecules)]

    def featurise() -> None:
        graphs = [featurize(s) for s in sample]
        for i in range(0, len(graphs), 64):
            collate_graphs(graphs[i : i + 64])

    seconds, _ = _timed(featurise)
    result: dict = {"device": str(device), "threads": torch.get_num_threads(), "model": model}
    result["featurise_mol_per_s"] = molecules / seconds

    unique = unique[: max(molecules, *pools)]
    graphs = [featurize(s) for s in unique]
    heavy = torch.tensor([[float(g.num_nodes)] for g in graphs])  # a computed label: heavy-atom count
    spec = TaskSpec("regression", 1, target_names=("heavy_atoms",))
    config = build_config("demo", model=model, task_epochs=5, patience=5)
    base = MoleculeDataset(unique, heavy, torch.ones_like(heavy, dtype=torch.bool), spec, _graphs=graphs)
    small = base.subset(range(min(molecules, len(base))))
    data = featurise_split(config, small, range(len(small)), range(2), range(2))
    module = querying_module(model, len(data.tokenizer)).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(0)
    seconds, _ = _timed(lambda: querying_epoch(config, module, optimizer, data, device, generator))
    result["encoder_epoch_mol_per_s"] = len(small) / seconds

    tokenizer = SmilesTokenizer.build(unique)
    module = querying_module(model, len(tokenizer)).to(device).eval()
    rounds = []
    for size in pools:
        index = [i % len(base) for i in range(size)]
        pool = MoleculeDataset(
            [base.smiles[i] for i in index], heavy[index], torch.ones(size, 1, dtype=torch.bool), spec,
            _graphs=[graphs[i] for i in index],
        )  # fmt: skip
        labelled = list(range(min(LABELLED, size - budget)))
        t_train, _ = _timed(
            lambda pool=pool, labelled=labelled: train_task_learner(
                config, pool.subset(labelled), pool.subset(range(2)), device, seed=0
            )
        )

        @torch.no_grad()
        def embed(pool=pool, size=size) -> tuple[torch.Tensor, torch.Tensor]:
            zs = [module.embed(pool.batch(range(i, min(i + EMBED_CHUNK, size))).to(device)).cpu()
                  for i in range(0, size, EMBED_CHUNK)]  # fmt: skip
            z = torch.cat(zs)
            return z, module.predict_loss(z.to(device)).cpu()

        t_embed, (z, predicted) = _timed(embed)
        candidates = range(len(labelled), size)
        t_select, picks = _timed(
            lambda z=z, predicted=predicted, labelled=labelled, candidates=candidates: select_tyger(
                labelled, candidates, budget, embeddings=z, predicted_loss=predicted
            )
        )
        row = {
            "pool": size,
            "train_s": t_train,
            "embed_s": t_embed,
            "select_s": t_select,
            "round_s": t_train + t_embed + t_select,
            "picks": len(picks),
        }
        log.info(f"pool {size}: round {row['round_s']:.2f} s (train {t_train:.2f}, embed {t_embed:.2f}, "
                 f"select {t_select:.2f})")  # fmt: skip
        rounds.append(row)
    result["rounds"] = rounds
    result["ecfp_bits"] = int(ecfp4(small.mols()[:1]).shape[1])
    return result


def format_result(result: dict) -> str:
    """The benchmark as a short text table."""
    lines = [
        f"device {result['device']}, {result['threads']} thread(s), {result['model']} sizes",
        f"featurisation: {result['featurise_mol_per_s']:.0f} molecules/s (SMILES -> batched graphs)",
        f"querying-module training: {result['encoder_epoch_mol_per_s']:.0f} molecules/s (one epoch, L_trans + L_DK)",
        "pool      train s   embed s   select s   round s",
    ]
    for r in result["rounds"]:
        lines.append(
            f"{r['pool']:>7}  {r['train_s']:8.2f}  {r['embed_s']:8.2f}  {r['select_s']:9.2f}  {r['round_s']:8.2f}"
        )
    return "\n".join(lines)
