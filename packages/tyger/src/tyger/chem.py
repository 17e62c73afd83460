"""Chemistry with RDKit: molecule graphs, the SMILES tokenizer, fingerprints, descriptors and scaffolds.

Atoms carry the nine categorical features of the OGB / PyG ``from_smiles`` convention (atomic number,
chirality tag, degree, formal charge, total H count, radical electrons, hybridisation, aromatic, in ring);
bonds carry bond type, stereo, conjugated and in ring. Features are stored as category indices, one column per
feature, so a model embeds each column with its own table (the same as a linear map of its one-hot code).
Each bond gives two directed edges.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import QED, Descriptors, rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold

__all__ = [
    "ATOM_FEATURES",
    "BOND_FEATURES",
    "DESCRIPTOR_NAMES",
    "SMILES_REGEX",
    "SPECIAL_TOKENS",
    "GraphBatch",
    "MolGraph",
    "SmilesTokenizer",
    "canonical_smiles",
    "collate_graphs",
    "descriptors",
    "ecfp4",
    "ecfp4_bitvects",
    "featurize",
    "murcko_scaffold",
    "parse_smiles",
    "quiet_rdkit",
    "random_smiles",
    "tokenize_smiles",
]


def _with_misc(values: Sequence) -> list:
    return [*values, "misc"]


#: Feature name -> allowed values; the last value "misc" takes everything else (OGB ``allowable_features``).
ATOM_FEATURES: dict[str, list] = {
    "atomic_num": _with_misc(range(1, 119)),
    "chirality": _with_misc(["CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER"]),
    "degree": _with_misc(range(11)),
    "formal_charge": _with_misc(range(-5, 6)),
    "num_hs": _with_misc(range(9)),
    "radical_electrons": _with_misc(range(5)),
    "hybridization": _with_misc(["SP", "SP2", "SP3", "SP3D", "SP3D2"]),
    "aromatic": [False, True],
    "in_ring": [False, True],
}
BOND_FEATURES: dict[str, list] = {
    "bond_type": _with_misc(["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC"]),
    "stereo": _with_misc(["STEREONONE", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS", "STEREOANY"]),
    "conjugated": [False, True],
    "in_ring": [False, True],
}
_ATOM_INDEX = [{v: i for i, v in enumerate(values)} for values in ATOM_FEATURES.values()]
_BOND_INDEX = [{v: i for i, v in enumerate(values)} for values in BOND_FEATURES.values()]


def _index(table: dict, value) -> int:
    return table.get(value, len(table) - 1)


@contextlib.contextmanager
def quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's own stderr messages; callers report unparsable input themselves."""
    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


def parse_smiles(smiles: str) -> Chem.Mol | None:
    """A sanitised RDKit molecule, or None when ``smiles`` is empty or does not parse."""
    if not smiles or not smiles.strip():
        return None
    with quiet_rdkit():
        mol = Chem.MolFromSmiles(smiles.strip())
    return mol if mol is not None and mol.GetNumAtoms() > 0 else None


def random_smiles(smiles_or_mol: str | Chem.Mol, seed: int) -> str:
    """A valid SMILES of the molecule from a seeded random atom order (augmented decoder targets)."""
    mol = parse_smiles(smiles_or_mol) if isinstance(smiles_or_mol, str) else smiles_or_mol
    if mol is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles_or_mol!r}")
    order = np.random.default_rng(seed).permutation(mol.GetNumAtoms()).tolist()
    return Chem.MolToSmiles(Chem.RenumberAtoms(mol, order), canonical=False)


def canonical_smiles(smiles_or_mol: str | Chem.Mol) -> str | None:
    """RDKit canonical isomeric SMILES, or None for an unparsable string."""
    mol = parse_smiles(smiles_or_mol) if isinstance(smiles_or_mol, str) else smiles_or_mol
    return None if mol is None else Chem.MolToSmiles(mol)


@dataclass(frozen=True)
class MolGraph:
    """One molecule: category indices ``x`` (atoms, 9) and ``edge_attr`` (2 bonds, 4); ``edge_index`` (2, 2 bonds)."""

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]


def featurize(smiles_or_mol: str | Chem.Mol) -> MolGraph:
    """The molecule graph of a SMILES string or RDKit molecule (hydrogens implicit, as the H-count feature)."""
    mol = parse_smiles(smiles_or_mol) if isinstance(smiles_or_mol, str) else smiles_or_mol
    if mol is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles_or_mol!r}")
    atoms = [
        (
            atom.GetAtomicNum(),
            str(atom.GetChiralTag()),
            atom.GetTotalDegree(),
            atom.GetFormalCharge(),
            atom.GetTotalNumHs(),
            atom.GetNumRadicalElectrons(),
            str(atom.GetHybridization()),
            atom.GetIsAromatic(),
            atom.IsInRing(),
        )
        for atom in mol.GetAtoms()
    ]
    x = torch.tensor([[_index(t, v) for t, v in zip(_ATOM_INDEX, a, strict=True)] for a in atoms], dtype=torch.long)
    bonds = list(mol.GetBonds())
    if not bonds:
        return MolGraph(x, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, len(BOND_FEATURES), dtype=torch.long))
    ends = torch.tensor([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in bonds], dtype=torch.long)
    attr = torch.tensor(
        [
            [
                _index(t, v)
                for t, v in zip(
                    _BOND_INDEX,
                    (str(b.GetBondType()), str(b.GetStereo()), b.GetIsConjugated(), b.IsInRing()),
                    strict=True,
                )
            ]
            for b in bonds
        ],
        dtype=torch.long,
    )
    # Bond k gives the directed edges 2k (begin -> end) and 2k + 1 (end -> begin).
    edge_index = torch.stack([ends, ends.flip(1)], dim=1).reshape(-1, 2).T.contiguous()
    return MolGraph(x, edge_index, attr.repeat_interleave(2, dim=0))


@dataclass(frozen=True)
class GraphBatch:
    """Molecules as one disconnected graph: ``batch[n]`` is the molecule of node n."""

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    num_graphs: int

    def to(self, device: torch.device | str) -> GraphBatch:
        return GraphBatch(
            self.x.to(device),
            self.edge_index.to(device),
            self.edge_attr.to(device),
            self.batch.to(device),
            self.num_graphs,
        )


def collate_graphs(graphs: Sequence[MolGraph]) -> GraphBatch:
    """Concatenate molecule graphs, shifting each one's edge indices by the atoms before it."""
    nodes = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long)
    edges = torch.tensor([g.edge_index.shape[1] for g in graphs], dtype=torch.long)
    offsets = torch.cumsum(nodes, 0) - nodes
    edge_index = torch.cat([g.edge_index for g in graphs], dim=1) + offsets.repeat_interleave(edges)
    return GraphBatch(
        x=torch.cat([g.x for g in graphs]),
        edge_index=edge_index,
        edge_attr=torch.cat([g.edge_attr for g in graphs]),
        batch=torch.arange(len(graphs)).repeat_interleave(nodes),
        num_graphs=len(graphs),
    )


# --- SMILES tokenizer -------------------------------------------------------------------------------------------

#: The SMILES regular expression of Schwaller et al. (2019, "Molecular Transformer"), with a final catch-all
#: so every character lands in some token and decoding reproduces the input exactly.
SMILES_REGEX = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9]|.)"
)
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def tokenize_smiles(smiles: str) -> list[str]:
    """Split a SMILES string into tokens: bracket atoms, Br/Cl, ring closures (%nn), bonds, branches, atoms."""
    return SMILES_REGEX.findall(smiles)


class SmilesTokenizer:
    """Token <-> id mapping with ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3, then the data's tokens."""

    def __init__(self, tokens: Iterable[str] = ()):
        self.itos = list(SPECIAL_TOKENS) + [t for t in tokens if t not in SPECIAL_TOKENS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, smiles: Iterable[str]) -> SmilesTokenizer:
        """A vocabulary of every token in ``smiles``, ordered by first appearance after sorting (deterministic)."""
        return cls(sorted({t for s in smiles for t in tokenize_smiles(s)}))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, smiles: str, add_special: bool = True) -> list[int]:
        ids = [self.stoi.get(t, self.unk_id) for t in tokenize_smiles(smiles)]
        return [self.bos_id, *ids, self.eos_id] if add_special else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Tokens up to the first ``<eos>``, without ``<bos>``/``<pad>`` (``<unk>`` stays visible)."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else "<unk>")
        return "".join(out)

    def encode_batch(self, smiles: Sequence[str], max_len: int | None = None) -> torch.Tensor:
        """(B, T) ids with ``<bos>``/``<eos>``, right-padded with ``<pad>``; longer strings are cut at ``max_len``."""
        seqs = [self.encode(s)[:max_len] if max_len else self.encode(s) for s in smiles]
        out = torch.full((len(seqs), max(map(len, seqs))), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(seqs):
            out[row, : len(seq)] = torch.tensor(seq)
        return out

    def to_json(self) -> str:
        return json.dumps({"tokens": self.itos})

    @classmethod
    def from_json(cls, text: str) -> SmilesTokenizer:
        return cls(json.loads(text)["tokens"])


# --- fingerprints, descriptors, scaffolds -----------------------------------------------------------------------

_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def ecfp4_bitvects(mols: Iterable[Chem.Mol]) -> list[DataStructs.ExplicitBitVect]:
    """ECFP4 (Morgan radius 2, 2048 bits) as RDKit bit vectors."""
    return [_MORGAN.GetFingerprint(m) for m in mols]


def ecfp4(mols: Iterable[Chem.Mol]) -> torch.Tensor:
    """ECFP4 bits as a (N, 2048) uint8 tensor."""
    rows = [_MORGAN.GetFingerprintAsNumPy(m) for m in mols]
    return torch.from_numpy(np.stack(rows).astype(np.uint8)) if rows else torch.zeros(0, 2048, dtype=torch.uint8)


DESCRIPTOR_NAMES = (
    "MolWt",
    "MolLogP",
    "TPSA",
    "NumHDonors",
    "NumHAcceptors",
    "NumRotatableBonds",
    "RingCount",
    "NumAromaticRings",
    "FractionCSP3",
    "HeavyAtomCount",
    "QED",
)


def descriptors(mols: Iterable[Chem.Mol]) -> torch.Tensor:
    """The eleven RDKit descriptors of :data:`DESCRIPTOR_NAMES`, (N, 11) float32 (unstandardised)."""
    funcs = [QED.qed if name == "QED" else getattr(Descriptors, name) for name in DESCRIPTOR_NAMES]
    rows = [[float(f(m)) for f in funcs] for m in mols]
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, len(funcs))


def murcko_scaffold(mol: Chem.Mol) -> str:
    """Bemis-Murcko scaffold SMILES without chirality (deepchem's ``_generate_scaffold``); '' for acyclic molecules."""
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
