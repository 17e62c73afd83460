import gzip

import pytest
import torch

from shared.errors import UserError
from tyger.chem import murcko_scaffold, parse_smiles
from tyger.data import TaskSpec, load_embedded, random_split, read_molecule_csv, read_molecule_sdf, scaffold_split


def _write(path, text):
    path.write_text(text)
    return path


def test_multilabel_csv_with_missing_and_invalid(tmp_path):
    csv = _write(
        tmp_path / "tox.csv",
        "mol_id,SMILES,NR-AR,SR-p53\n"
        "a,CCO,1,\n"
        "b,not_a_smiles,0,1\n"
        "c,c1ccccc1,,0\n"
        "d,OCC,0,1\n"  # ethanol again: a duplicate
        "e,CC(=O)O,,\n"  # no label at all
        "f,C1CC,1,1\n"  # unclosed ring
        "g,CCN,0,1\n",
    )
    ds = read_molecule_csv(csv)
    assert ds.spec.task_type == "multilabel" and ds.spec.target_names == ("NR-AR", "SR-p53")
    assert ds.smiles == ["CCO", "c1ccccc1", "CCN"]
    assert ds.rows == [1, 3, 7]
    assert [r for r, _ in ds.invalid_rows] == [2, 6]
    assert ds.mask.tolist() == [[True, False], [False, True], [True, True]]
    assert ds.y.tolist() == [[1, 0], [0, 0], [0, 1]]


def test_csv_gz_regression_and_given_columns(tmp_path):
    path = tmp_path / "esol.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("Compound ID,smiles,measured log solubility in mols per litre,MolWt\nx,CCO,0.5,46\ny,CCCC,-1.25,58\n")
    ds = read_molecule_csv(path, dataset="esol")
    assert ds.spec.task_type == "regression" and ds.y[:, 0].tolist() == [0.5, -1.25]
    auto = read_molecule_csv(path)
    assert auto.spec.target_names == ("measured log solubility in mols per litre", "MolWt")
    bin_ = _write(tmp_path / "b.csv", "mol,Class\nCCO,1\nCCC,0\n")
    assert read_molecule_csv(bin_).spec.task_type == "binary"
    multi = _write(tmp_path / "m.csv", "smiles,cls\nCCO,0\nCCC,1\nCCCC,2\n")
    spec = read_molecule_csv(multi).spec
    assert spec.task_type == "multiclass" and spec.n_outputs == 3


def test_sdf_with_crlf_and_a_broken_record(tmp_path):
    from rdkit import Chem

    blocks = []
    for smi, sol in (("CCO", "0.5"), ("c1ccccc1", "-1.5")):
        mol = Chem.MolFromSmiles(smi)
        mol.SetProp("SOL", sol)
        mol.SetProp("NAME_TAG", "x")
        blocks.append(Chem.MolToMolBlock(mol) + "> <SOL>\n" + sol + "\n\n> <ID>\nm\n\n$$$$\n")
    broken = "broken\n\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n    0.0 0.0 0.0 Xx  0  0\nM  END\n$$$$\n"
    path = tmp_path / "sol.sdf"
    path.write_bytes((blocks[0] + broken + blocks[1]).replace("\n", "\r\n").encode())
    ds = read_molecule_sdf(path, targets=["SOL"])
    assert ds.smiles == ["CCO", "c1ccccc1"] and ds.y[:, 0].tolist() == [0.5, -1.5]
    assert [r for r, _ in ds.invalid_rows] == [2] and ds.spec.task_type == "regression"


def test_csv_refusals(tmp_path):
    no_smiles = _write(tmp_path / "a.csv", "structure,y\nCCO,1\n")
    with pytest.raises(UserError, match=r"no 'smiles' or 'mol' column \(columns: structure, y\)"):
        read_molecule_csv(no_smiles)
    with pytest.raises(UserError, match="no column 'SMI'"):
        read_molecule_csv(no_smiles, smiles_col="SMI")
    strings = _write(tmp_path / "b.csv", "smiles,label\nCCO,active\nCCC,inactive\n")
    with pytest.raises(UserError, match="task column 'label' holds text"):
        read_molecule_csv(strings, targets=["label"])
    with pytest.raises(UserError, match="no numeric task column"):
        read_molecule_csv(strings)
    with pytest.raises(UserError, match="no target column 'y'"):
        read_molecule_csv(strings, targets=["y"])
    with pytest.raises(UserError, match="needs labels 0/1"):
        read_molecule_csv(_write(tmp_path / "c.csv", "smiles,y\nCCO,0.3\n"), task_type="binary")
    with pytest.raises(UserError, match="is empty"):
        read_molecule_csv(_write(tmp_path / "d.csv", ""))


SMILES = [
    "c1ccccc1CCO", "c1ccccc1CCN", "c1ccccc1C", "C1CCCCC1O", "C1CCCCC1N", "c1ccncc1C",
    "c1ccncc1O", "CCO", "CCCC", "c1ccc2ccccc2c1", "O=C1CCCN1", "c1ccccc1Cl",
]  # fmt: skip


def test_scaffold_split_disjoint_and_deterministic():
    train, valid, test = scaffold_split(SMILES, (0.6, 0.2, 0.2))
    assert sorted(train + valid + test) == list(range(len(SMILES)))
    scaffolds = [{murcko_scaffold(parse_smiles(SMILES[i])) for i in part} for part in (train, valid, test)]
    assert not (scaffolds[0] & scaffolds[1]) and not (scaffolds[0] & scaffolds[2]) and not (scaffolds[1] & scaffolds[2])
    assert scaffold_split(SMILES, (0.6, 0.2, 0.2)) == (train, valid, test)
    # the largest scaffold set (benzene, 5 molecules) goes to train first
    assert {0, 1, 2, 11} <= set(train)
    with pytest.raises(UserError, match="fractions"):
        scaffold_split(SMILES, (0.5, 0.2, 0.2))


def test_random_split_seeded():
    a = random_split(100, seed=1)
    assert [len(p) for p in a] == [80, 10, 10] and sorted(a[0] + a[1] + a[2]) == list(range(100))
    assert a == random_split(100, seed=1) and a != random_split(100, seed=2)


def test_embedded_tasks(tmp_path):
    reg = load_embedded("chembl-reg", folder=tmp_path)
    assert (tmp_path / "chembl-reg.csv").is_file()
    assert len(reg) == 1017 and reg.spec.task_type == "regression" and reg.spec.n_outputs == 1
    assert 4.2 < reg.y.min() < reg.y.max() < 9.3
    binary = load_embedded("chembl-bin", folder=tmp_path)
    assert binary.spec.task_type == "binary" and int(binary.y.sum()) == 492
    assert binary.smiles == reg.smiles and torch.equal(binary.y, (reg.y >= 6.5).float())
    alerts = load_embedded("nci-alerts", folder=tmp_path, limit=200)
    assert alerts.spec.task_type == "multilabel" and alerts.spec.n_outputs >= 3
    assert "PAINS" not in alerts.spec.target_names or alerts.y[:, 0].mean() >= 0.02
    with pytest.raises(UserError, match="unknown embedded dataset"):
        load_embedded("tox21", folder=tmp_path)


def test_task_spec_dispatches_loss_and_metric():
    y = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    mask = torch.ones(4, 1, dtype=torch.bool)
    binary = TaskSpec("binary", 1)
    assert binary.metric(torch.tensor([[2.0], [-1.0], [0.5], [1.0]]), y, mask) == 0.75
    assert binary.higher_is_better and binary.metric_name == "roc_auc"
    reg = TaskSpec("regression", 1)
    assert reg.metric(y + 2, y, mask) == 2.0 and not reg.higher_is_better
    assert reg.loss(y + 1, y, mask).item() == 1.0
    with pytest.raises(UserError, match="task type must be one of"):
        TaskSpec("ranking", 1)
