import pytest
import torch
from rdkit import Chem

from tyger.chem import (
    ATOM_FEATURES,
    BOND_FEATURES,
    SmilesTokenizer,
    canonical_smiles,
    collate_graphs,
    descriptors,
    ecfp4,
    featurize,
    random_smiles,
    tokenize_smiles,
)


def _code(table: dict, feature: str, value) -> int:
    return table[feature].index(value)


def test_ethanol_by_hand():
    g = featurize("CCO")
    assert g.x.shape == (3, len(ATOM_FEATURES)) == (3, 9)
    assert g.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert g.edge_attr.shape == (4, len(BOND_FEATURES))
    a = ATOM_FEATURES
    # methyl C: atomic number 6, 4 neighbours counting H, 3 H, sp3; O: 8, 2 neighbours, 1 H
    assert g.x[0].tolist() == [
        _code(a, "atomic_num", 6), 0, _code(a, "degree", 4), _code(a, "formal_charge", 0),
        _code(a, "num_hs", 3), 0, _code(a, "hybridization", "SP3"), 0, 0,
    ]  # fmt: skip
    assert g.x[2, 0] == _code(a, "atomic_num", 8) and g.x[2, 4] == _code(a, "num_hs", 1)
    assert (g.edge_attr[:, 0] == _code(BOND_FEATURES, "bond_type", "SINGLE")).all()


def test_benzene_and_charges():
    g = featurize("c1ccccc1")
    assert g.x.shape[0] == 6 and g.edge_index.shape == (2, 12)
    assert (g.x[:, 7] == 1).all() and (g.x[:, 8] == 1).all()  # aromatic, in ring
    assert (g.edge_attr[:, 0] == BOND_FEATURES["bond_type"].index("AROMATIC")).all()
    assert (g.edge_attr[:, 2:] == 1).all()  # conjugated, in ring
    acetate = featurize("CC(=O)[O-]")
    assert acetate.x[3, 3] == ATOM_FEATURES["formal_charge"].index(-1)
    with pytest.raises(ValueError, match="cannot parse"):
        featurize("C1CC")


def test_collate_offsets_and_graph_index():
    graphs = [featurize("CCO"), featurize("[Na+]"), featurize("c1ccccc1")]
    batch = collate_graphs(graphs)
    assert batch.x.shape == (10, 9) and batch.num_graphs == 3
    assert batch.batch.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2, 2]
    assert batch.edge_index.shape == (2, 16)
    assert batch.edge_index[:, 4:].min() == 4  # benzene's edges shifted past ethanol and sodium
    assert (batch.batch[batch.edge_index[0]] == batch.batch[batch.edge_index[1]]).all()


def test_tokenizer_round_trip():
    smiles = ["BrC1=CC=C(Cl)C=C1", "C[C@@H](N)C(=O)O", "c1cc[nH]c1", "C%10CCCCC%10", "[Na+].[Cl-]", "C#N", "C/C=C/C"]
    assert tokenize_smiles("BrCCl") == ["Br", "C", "Cl"]
    assert tokenize_smiles("C%12CC%12") == ["C", "%12", "C", "C", "%12"]
    assert tokenize_smiles("[C@@H](O)c1") == ["[C@@H]", "(", "O", ")", "c", "1"]
    tok = SmilesTokenizer.build(smiles)
    assert tok.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    for s in smiles:
        ids = tok.encode(s)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert tok.decode(ids) == s
    assert tok.encode("CI", add_special=False)[1] == tok.unk_id
    batch = tok.encode_batch(smiles[:2])
    assert batch.shape[0] == 2 and (batch[1, len(tok.encode(smiles[1])) :] == 0).all()
    assert SmilesTokenizer.from_json(tok.to_json()).itos == tok.itos


def test_random_smiles_names_the_same_molecule():
    smi = "CC(=O)Nc1ccc(O)cc1"
    variants = {random_smiles(smi, seed) for seed in range(10)}
    assert len(variants) > 1
    assert {canonical_smiles(v) for v in variants} == {canonical_smiles(smi)}
    assert random_smiles(smi, 3) == random_smiles(smi, 3)


def test_fingerprints_and_descriptors():
    mols = [Chem.MolFromSmiles(s) for s in ("CCO", "c1ccccc1")]
    fp = ecfp4(mols)
    assert fp.shape == (2, 2048) and fp.dtype == torch.uint8 and fp.sum() > 0
    d = descriptors(mols)
    assert d.shape == (2, 11)
    assert d[1, 6] == 1 and d[1, 7] == 1  # RingCount, NumAromaticRings of benzene
