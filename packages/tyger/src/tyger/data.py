"""Molecule datasets: the MoleculeNet CSV format, splits, and the embedded defaults from the RDKit wheel.

A MoleculeNet CSV (Wu et al. 2018, "MoleculeNet: a benchmark for molecular machine learning") has one
SMILES column and one column per task; an empty cell is a missing label. The embedded defaults are real
molecules shipped inside the ``rdkit`` wheel, written once as such a CSV and read back by the same reader.
"""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem

from shared.checkpoint import atomic_write
from shared.data import cache_dir
from shared.errors import UserError, require_path
from shared.logging import get_logger
from tyger.chem import (
    GraphBatch,
    MolGraph,
    canonical_smiles,
    collate_graphs,
    featurize,
    murcko_scaffold,
    parse_smiles,
    quiet_rdkit,
)
from tyger.losses import task_loss
from tyger.metrics import accuracy, rmse, roc_auc

__all__ = [
    "EMBEDDED",
    "MOLECULENET_TARGETS",
    "TASK_TYPES",
    "MoleculeDataset",
    "TaskSpec",
    "load_embedded",
    "random_split",
    "rdkit_data_file",
    "read_molecule_csv",
    "read_molecule_sdf",
    "read_smiles_file",
    "scaffold_split",
    "write_embedded_csv",
]

TASK_TYPES = ("regression", "binary", "multilabel", "multiclass")

#: Task columns of the MoleculeNet CSVs (deepchem's ``load_*`` functions), so ``targets=None`` can name a dataset.
MOLECULENET_TARGETS: dict[str, tuple[str, ...]] = {
    "esol": ("measured log solubility in mols per litre",),
    "freesolv": ("expt",),
    "lipophilicity": ("exp",),
    "bbbp": ("p_np",),
    "bace": ("Class",),
    "hiv": ("HIV_active",),
    "tox21": (
        "NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD", "NR-PPAR-gamma",
        "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53",
    ),
    "clintox": ("FDA_APPROVED", "CT_TOX"),
}  # fmt: skip


@dataclass(frozen=True)
class TaskSpec:
    """What the task learner predicts: ``n_outputs`` values (tasks, or classes for ``multiclass``)."""

    task_type: str
    n_outputs: int
    n_classes: int | None = None
    target_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise UserError(f"task type must be one of {', '.join(TASK_TYPES)}, got {self.task_type!r}")

    @property
    def is_classification(self) -> bool:
        return self.task_type != "regression"

    @property
    def higher_is_better(self) -> bool:
        """ROC-AUC / accuracy rise, RMSE falls."""
        return self.is_classification

    @property
    def metric_name(self) -> str:
        return {"regression": "rmse", "multiclass": "accuracy"}.get(self.task_type, "roc_auc")

    def loss(self, outputs: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, **kwargs) -> torch.Tensor:
        """:func:`tyger.losses.task_loss` for this task type."""
        return task_loss(outputs, y, mask, self.task_type, **kwargs)

    def metric(self, outputs: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
        """RMSE (``outputs`` in the labels' units), mean ROC-AUC over labels, or multiclass accuracy."""
        if self.task_type == "regression":
            return rmse(outputs, y, mask)
        if self.task_type == "multiclass":
            return accuracy(outputs, y, mask)
        return roc_auc(outputs, y, mask)


@dataclass
class MoleculeDataset:
    """Molecules with labels ``y`` (N, K) and a label-present ``mask`` (N, K); missing labels hold 0 in ``y``.

    For ``multiclass`` K = 1 and ``y`` holds the class index. ``rows`` are the source file's data-row numbers
    (1 = first row after the header).
    """

    smiles: list[str]
    y: torch.Tensor
    mask: torch.Tensor
    spec: TaskSpec
    rows: list[int] = field(default_factory=list)
    invalid_rows: list[tuple[int, str]] = field(default_factory=list)
    _graphs: list[MolGraph] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.smiles)

    @classmethod
    def from_csv(cls, path: str | Path, **kwargs) -> MoleculeDataset:
        """See :func:`read_molecule_csv`."""
        return read_molecule_csv(path, **kwargs)

    def mols(self) -> list:
        return [parse_smiles(s) for s in self.smiles]

    def graphs(self) -> list[MolGraph]:
        """Molecule graphs, featurised once and kept."""
        if self._graphs is None:
            self._graphs = [featurize(s) for s in self.smiles]
        return self._graphs

    def batch(self, index: Sequence[int]) -> GraphBatch:
        graphs = self.graphs()
        return collate_graphs([graphs[i] for i in index])

    def subset(self, index: Sequence[int]) -> MoleculeDataset:
        index = list(index)
        graphs = None if self._graphs is None else [self._graphs[i] for i in index]
        return MoleculeDataset(
            [self.smiles[i] for i in index],
            self.y[index],
            self.mask[index],
            self.spec,
            [self.rows[i] for i in index] if self.rows else [],
            [],
            graphs,
        )


# --- the CSV reader ---------------------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _number(cell: str) -> float | None:
    """A cell as a float; None when it is empty (a missing label); ValueError when it is text."""
    cell = cell.strip()
    if cell == "" or cell.lower() in ("nan", "na"):
        return None
    value = float(cell)
    if not math.isfinite(value):
        raise ValueError(cell)
    return value


def _is_identifier(name: str) -> bool:
    """Column names that label rows rather than measure them (``id``, ``name``, ``mol_id``, ``Compound ID``)."""
    low = name.strip().lower()
    return low in ("id", "name", "index") or low.endswith(("_id", " id", "_name", " name"))


def _infer_task_type(values: np.ndarray, present: np.ndarray) -> str:
    """{0, 1} -> binary (one column) or multilabel; one column of at most 20 non-negative integers -> multiclass."""
    seen = np.unique(values[present])
    if np.isin(seen, (0.0, 1.0)).all():
        return "binary" if values.shape[1] == 1 else "multilabel"
    integral = (seen == np.round(seen)).all() and (seen >= 0).all()
    if values.shape[1] == 1 and integral and 2 < len(seen) <= 20:
        return "multiclass"
    return "regression"


def read_molecule_csv(
    path: str | Path,
    smiles_col: str | None = None,
    targets: Sequence[str] | None = None,
    task_type: str | None = None,
    dataset: str | None = None,
) -> MoleculeDataset:
    """Read a MoleculeNet-style ``.csv``/``.csv.gz`` (``.tsv`` tab-separated).

    ``smiles_col`` defaults to the column named ``smiles``, else ``mol`` (case-insensitive). ``targets``
    defaults to the named ``dataset``'s columns (:data:`MOLECULENET_TARGETS`), else every other column whose
    cells are all numbers or empty, identifier columns (``id``, ``name``, ``*_id``, ``* name``) left out.
    Unparsable SMILES are skipped and reported (count and first rows), duplicate canonical SMILES keep their
    first row, and rows with no label at all are dropped; each is logged.
    """
    path = require_path(path, "data file", kind="file")
    delimiter = "\t" if ".tsv" in path.suffixes else ","
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            rows = list(reader)
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable CSV file ({exc}): give a MoleculeNet-style CSV") from exc
    if not header:
        raise UserError(f"{path} is empty: a CSV with a header row and a SMILES column is needed")
    numbered = [(n, r) for n, r in enumerate(rows, 1) if any(c.strip() for c in r)]
    return _table_to_dataset(path, header, numbered, smiles_col, targets, task_type, dataset)


def _report_unparsable(path: Path, invalid: list[tuple[int, str]]) -> None:
    """One warning line: how many SMILES of ``path`` RDKit could not parse, and the first five rows."""
    if invalid:
        shown = "; ".join(f"row {r}: {s!r}" for r, s in invalid[:5])
        more = "; ..." if len(invalid) > 5 else ""
        get_logger().warning(f"{path.name}: skipped {len(invalid)} unparsable SMILES ({shown}{more})")


def read_smiles_file(path: str | Path, smiles_col: str | None = None) -> list[str]:
    """Unlabelled candidates: canonical SMILES of a CSV's SMILES column (as :func:`read_molecule_csv` finds it)
    or of a ``.smi`` file (first field of each line). Unparsable SMILES are reported and skipped, duplicates kept
    once."""
    path = require_path(path, "candidate file", kind="file")
    if path.suffix == ".smi":
        cells = [(n, line.split()[0]) for n, line in enumerate(path.read_text().splitlines(), 1) if line.split()]
    else:
        delimiter = "\t" if ".tsv" in path.suffixes else ","
        try:
            with _open_text(path) as handle:
                reader = csv.reader(handle, delimiter=delimiter)
                header = [h.strip() for h in next(reader, [])]
                rows = list(reader)
        except (UnicodeDecodeError, OSError, csv.Error) as exc:
            raise UserError(f"{path} is not a readable CSV file ({exc})") from exc
        lower = {h.lower(): i for i, h in reversed(list(enumerate(header)))}
        if smiles_col is not None:
            if smiles_col not in header:
                raise UserError(f"{path} has no column {smiles_col!r} (columns: {', '.join(header)}): fix --smiles-col")
            col = header.index(smiles_col)
        else:
            col = next((lower[c] for c in ("smiles", "mol") if c in lower), None)
            if col is None:
                raise UserError(
                    f"{path} has no 'smiles' or 'mol' column (columns: {', '.join(header)}): name it with --smiles-col"
                )
        cells = [(n, r[col]) for n, r in enumerate(rows, 1) if len(r) > col and r[col].strip()]
    out, seen, invalid = [], set(), []
    for n, cell in cells:
        smi = canonical_smiles(cell.strip())
        if smi is None:
            invalid.append((n, cell))
        elif smi not in seen:
            seen.add(smi)
            out.append(smi)
    _report_unparsable(path, invalid)
    if not out:
        raise UserError(f"{path}: no valid SMILES")
    return out


def read_molecule_sdf(
    path: str | Path, targets: Sequence[str] | None = None, task_type: str | None = None
) -> MoleculeDataset:
    """Read an SD file: the molecules and their SD tags as task columns, then as :func:`read_molecule_csv`.

    Windows line ends are accepted; a record RDKit cannot read is reported as an unparsable row (its record
    number, 1-based) and skipped.
    """
    path = require_path(path, "data file", kind="file")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    supplier = Chem.SDMolSupplier()
    supplier.SetData(raw.decode("utf-8", errors="replace").replace("\r\n", "\n"))
    with quiet_rdkit():
        mols = list(supplier)
    tags: list[str] = []
    for mol in mols:
        if mol is not None:
            tags += [t for t in mol.GetPropNames() if t not in tags]
    rows = []
    for n, mol in enumerate(mols, 1):
        if mol is None:
            rows.append((n, ["<unreadable record>"] + [""] * len(tags)))
        else:
            props = mol.GetPropsAsDict()
            rows.append((n, [Chem.MolToSmiles(mol), *(str(props.get(t, "")) for t in tags)]))
    if not rows:
        raise UserError(f"{path} holds no SD records")
    return _table_to_dataset(path, ["smiles", *tags], rows, "smiles", targets, task_type, None)


def _table_to_dataset(
    path: Path,
    header: list[str],
    numbered_rows: list[tuple[int, list[str]]],
    smiles_col: str | None,
    targets: Sequence[str] | None,
    task_type: str | None,
    dataset: str | None,
) -> MoleculeDataset:
    log = get_logger()
    header = [h.strip() for h in header]
    lower = {h.lower(): i for i, h in reversed(list(enumerate(header)))}
    if smiles_col is None:
        found = next((lower[c] for c in ("smiles", "mol") if c in lower), None)
        if found is None:
            raise UserError(
                f"{path} has no 'smiles' or 'mol' column (columns: {', '.join(header)}): name it with --smiles-col"
            )
    elif smiles_col in header:
        found = header.index(smiles_col)
    else:
        raise UserError(f"{path} has no column {smiles_col!r} (columns: {', '.join(header)}): fix --smiles-col")
    smiles_idx = found
    numbers = [n for n, _ in numbered_rows]
    rows = [r + [""] * (len(header) - len(r)) for _, r in numbered_rows]
    if not rows:
        raise UserError(f"{path} has a header but no data rows")

    if targets is None and dataset is not None:
        if dataset.lower() not in MOLECULENET_TARGETS:
            raise UserError(f"unknown dataset {dataset!r}: known are {', '.join(MOLECULENET_TARGETS)}")
        targets = MOLECULENET_TARGETS[dataset.lower()]
    if targets is not None:
        missing = [t for t in targets if t not in header]
        if missing:
            raise UserError(
                f"{path} has no target column {', '.join(map(repr, missing))} (columns: {', '.join(header)})"
            )
        target_idx = [header.index(t) for t in targets]
    else:
        target_idx, skipped = [], []
        for i, name in enumerate(header):
            if i == smiles_idx:
                continue
            if _is_identifier(name):
                skipped.append(name)
                continue
            try:
                [_number(r[i]) for r in rows]
                target_idx.append(i)
            except ValueError:
                skipped.append(name)
        if not target_idx:
            raise UserError(
                f"{path} has no numeric task column besides {header[smiles_idx]!r}: name them with --targets"
            )
        if skipped:
            log.info(f"{path.name}: identifier and non-numeric columns not used as tasks: {', '.join(skipped)}")
    names = tuple(header[i] for i in target_idx)

    values = np.zeros((len(rows), len(target_idx)), dtype=np.float64)
    present = np.zeros_like(values, dtype=bool)
    for r, row in enumerate(rows):
        for k, i in enumerate(target_idx):
            try:
                v = _number(row[i])
            except ValueError:
                raise UserError(
                    f"{path}: task column {header[i]!r} holds text ({row[i].strip()!r} in data row {numbers[r]}): "
                    "task columns need numbers or empty cells; pick numeric columns with --targets"
                ) from None
            if v is not None:
                values[r, k], present[r, k] = v, True

    kept, invalid, seen, duplicates, unlabelled = [], [], set(), 0, 0
    canonical = []
    for r, row in enumerate(rows):
        smi = canonical_smiles(row[smiles_idx])
        if smi is None:
            invalid.append((numbers[r], row[smiles_idx]))
        elif smi in seen:
            duplicates += 1
        elif not present[r].any():
            unlabelled += 1
        else:
            seen.add(smi)
            kept.append(r)
            canonical.append(smi)
    _report_unparsable(path, invalid)
    if duplicates:
        log.info(f"{path.name}: {duplicates} duplicate molecules (same canonical SMILES) kept at their first row")
    if unlabelled:
        log.info(f"{path.name}: {unlabelled} molecules without any label dropped")
    if not kept:
        raise UserError(f"{path}: no row has a valid SMILES and a label")

    values, present = values[kept], present[kept]
    inferred = _infer_task_type(values, present)
    if task_type is None:
        task_type = inferred
    elif task_type not in TASK_TYPES:
        raise UserError(f"task type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
    elif task_type in ("binary", "multilabel") and inferred not in ("binary", "multilabel"):
        raise UserError(f"{path}: task type {task_type!r} needs labels 0/1, but the target columns hold other values")
    if task_type == "binary" and len(names) > 1:
        task_type = "multilabel"
    n_classes = None
    if task_type == "multiclass":
        if len(names) != 1 or inferred == "regression":
            raise UserError(f"{path}: 'multiclass' needs one target column of class indices 0..C-1")
        n_classes = int(values[present].max()) + 1
    spec = TaskSpec(task_type, n_classes or len(names), n_classes, names)
    return MoleculeDataset(
        canonical,
        torch.from_numpy(values).float(),
        torch.from_numpy(present),
        spec,
        rows=[numbers[r] for r in kept],
        invalid_rows=invalid,
    )


# --- splits -----------------------------------------------------------------------------------------------------


def _check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise UserError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")


def scaffold_split(
    smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> tuple[list[int], list[int], list[int]]:
    """Bemis-Murcko scaffold split (deepchem ``ScaffoldSplitter``): scaffold sets, largest first (ties: earliest
    first member), fill train, then valid, then test. Deterministic; whole scaffold sets stay on one side."""
    _check_fractions(fractions)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(smiles):
        mol = parse_smiles(s)
        if mol is None:
            raise UserError(f"cannot compute the scaffold of the unparsable SMILES {s!r}")
        groups.setdefault(murcko_scaffold(mol), []).append(i)
    sets = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    n = len(smiles)
    if sets and len(sets[0]) > 0.5 * n:
        get_logger().warning(
            f"the largest scaffold set holds {len(sets[0])} of {n} molecules (a congeneric series): use a random split"
        )
    train_cut, valid_cut = fractions[0] * n, (fractions[0] + fractions[1]) * n
    train, valid, test = [], [], []
    for group in sets:
        if len(train) + len(group) > train_cut:
            if len(train) + len(valid) + len(group) > valid_cut:
                test += group
            else:
                valid += group
        else:
            train += group
    return sorted(train), sorted(valid), sorted(test)


def random_split(
    n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[list[int], list[int], list[int]]:
    """A seeded random split of ``range(n)``; train and valid sizes are rounded down, test takes the rest."""
    _check_fractions(fractions)
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_valid = int(fractions[0] * n), int(fractions[1] * n)
    parts = order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]
    return tuple(sorted(int(i) for i in p) for p in parts)  # type: ignore[return-value]


# --- embedded defaults from the RDKit wheel ---------------------------------------------------------------------

#: RDKit FilterCatalog families of structural alerts for ``nci-alerts``; a label is "matches a rule of the family".
ALERT_FAMILIES = ("PAINS", "BRENK", "NIH", "ZINC", "CHEMBL_Glaxo", "CHEMBL_Dundee")
EMBEDDED = {
    "chembl-reg": "CHEMBL2321810 (RDKit Contrib/FreeWilson): pIC50-like 'Act', regression",
    "chembl-bin": "CHEMBL2321810: 'active' = Act >= 6.5, binary",
    "nci-alerts": "NCI first_5K (RDKit Data/NCI): structural-alert families, multilabel",
}
ACTIVITY_THRESHOLD = 6.5
MIN_POSITIVE_RATE = 0.02


def rdkit_data_file(relative: str) -> Path:
    """A file inside the installed ``rdkit`` package, e.g. ``Data/NCI/first_5K.smi``."""
    path = Path(str(importlib.resources.files("rdkit").joinpath(relative)))
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed rdkit: reinstall it (pip install -U rdkit)")
    return path


def _read_smi(path: Path) -> list[tuple[str, str]]:
    """(SMILES, id) pairs of a whitespace-separated ``.smi`` file."""
    pairs = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            pairs.append((parts[0], parts[1]))
    return pairs


def _chembl_rows(binary: bool) -> tuple[list[str], list[list]]:
    smiles = dict(
        (mol_id, smi) for smi, mol_id in _read_smi(rdkit_data_file("Contrib/FreeWilson/data/CHEMBL2321810.smi"))
    )
    with rdkit_data_file("Contrib/FreeWilson/data/CHEMBL2321810_act.csv").open(newline="") as handle:
        acts = [(r["Name"], float(r["Act"])) for r in csv.DictReader(handle)]
    rows = [
        [smiles[name], name, int(act >= ACTIVITY_THRESHOLD) if binary else act] for name, act in acts if name in smiles
    ]
    return ["smiles", "chembl_id", "active" if binary else "Act"], rows


def _alert_rows(limit: int | None) -> tuple[list[str], list[list]]:
    from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

    catalogs = FilterCatalogParams.FilterCatalogs
    members = {"PAINS": ("PAINS_A", "PAINS_B", "PAINS_C")}
    filters = {}
    for family in ALERT_FAMILIES:
        params = FilterCatalogParams()
        for member in members.get(family, (family,)):
            params.AddCatalog(getattr(catalogs, member))
        filters[family] = FilterCatalog(params)
    pairs = _read_smi(rdkit_data_file("Data/NCI/first_5K.smi"))[:limit]
    rows = []
    for smi, nci_id in pairs:
        mol = parse_smiles(smi)
        # Unparsable rows stay in the file with empty labels, so the reader reports them as it would a user's.
        labels = ["" if mol is None else int(f.HasMatch(mol)) for f in filters.values()]
        rows.append([smi, nci_id, *labels])
    parsed = [r for r in rows if r[2] != ""]
    rates = {f: sum(r[2 + k] for r in parsed) / max(1, len(parsed)) for k, f in enumerate(ALERT_FAMILIES)}
    get_logger().info("nci-alerts positive rates: " + ", ".join(f"{f} {p:.1%}" for f, p in rates.items()))
    keep, columns = [], []
    for k, family in enumerate(ALERT_FAMILIES):
        column = [r[2 + k] for r in parsed]
        if rates[family] < MIN_POSITIVE_RATE:
            get_logger().info(f"nci-alerts: {family} dropped ({rates[family]:.1%} positives)")
        elif column in columns:
            get_logger().info(f"nci-alerts: {family} dropped (labels identical to an earlier family)")
        else:
            keep.append(k)
            columns.append(column)
    header = ["smiles", "nci_id", *(ALERT_FAMILIES[k] for k in keep)]
    return header, [[r[0], r[1], *(r[2 + k] for k in keep)] for r in rows]


def write_embedded_csv(name: str, folder: str | Path, limit: int | None = None) -> Path:
    """Write the embedded dataset ``name`` as a MoleculeNet-style CSV ``folder/<name>.csv`` (atomically)."""
    if name not in EMBEDDED:
        raise UserError(f"unknown embedded dataset {name!r}: choose one of {', '.join(EMBEDDED)}")
    if name == "nci-alerts":
        header, rows = _alert_rows(limit)
    else:
        header, rows = _chembl_rows(binary=name == "chembl-bin")
        rows = rows[:limit]

    def write(handle) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)

    suffix = f"-{limit}" if limit else ""
    return atomic_write(Path(folder) / f"{name}{suffix}.csv", write, binary=False)


def load_embedded(name: str, folder: str | Path | None = None, limit: int | None = None) -> MoleculeDataset:
    """The embedded dataset ``name`` (see :data:`EMBEDDED`): written once as a CSV in ``folder`` (default the
    reprozoo cache), then read back by :func:`read_molecule_csv`. ``limit`` keeps the first rows (for tests)."""
    if name not in EMBEDDED:
        raise UserError(f"unknown embedded dataset {name!r}: choose one of {', '.join(EMBEDDED)}")
    if folder is None:
        from tyger import __version__

        folder = cache_dir("tyger", __version__)
    folder = Path(folder)
    path = folder / f"{name}{f'-{limit}' if limit else ''}.csv"
    if not path.is_file():
        path = write_embedded_csv(name, folder, limit)
    targets = {"chembl-reg": ["Act"], "chembl-bin": ["active"]}.get(name)
    return read_molecule_csv(path, smiles_col="smiles", targets=targets)
