import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def write_sample_csv(folder, name: str, rows: int = 240, seed: int = 0):
    """A MoleculeNet-style CSV of ``rows`` random molecules of the embedded set ``name`` (real data, small)."""
    import csv

    import numpy as np

    from tyger.data import load_embedded

    data = load_embedded(name)
    pick = sorted(np.random.default_rng(seed).choice(len(data), size=min(rows, len(data)), replace=False).tolist())
    path = folder / f"{name}-{rows}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", *data.spec.target_names])
        for i in pick:
            cells = zip(data.y[i].tolist(), data.mask[i].tolist(), strict=True)
            writer.writerow([data.smiles[i], *(f"{v:g}" if m else "" for v, m in cells)])
    return path


@pytest.fixture(scope="session")
def sample_csvs(tmp_path_factory):
    """Small real CSVs: ``regression`` (chembl-reg), ``binary`` (chembl-bin), ``multilabel`` (nci-alerts)."""
    folder = tmp_path_factory.mktemp("csv")
    return {
        "regression": write_sample_csv(folder, "chembl-reg"),
        "binary": write_sample_csv(folder, "chembl-bin"),
        "multilabel": write_sample_csv(folder, "nci-alerts", rows=300),
    }
