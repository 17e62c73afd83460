"""Repository rules of DESIGN.md, checked by reading files (run by ``nox -s lint``).

- Distribution names carry the project prefix (``reprozoo-shared``, ``reprozoo-<name>``), and no
  pyproject depends on a bare repo name such as ``shared``: PyPI holds unrelated projects under
  those names (dependency confusion).
- The dependency rule: ``shared`` imports no package of this repo; a package imports ``shared``
  and never another package of this repo.
- Every package has the anatomy the demo and CI rely on.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Import names of the ten packages (DESIGN.md), whether or not they have landed yet.
PLANNED = {
    "iformer",
    "knowfactor",
    "slimda",
    "probteacher",
    "tyger",
    "facemae",
    "promptdfd",
    "m3ed",
    "lcbooster",
    "tbvs",
}
PREFIX = "reprozoo-"


def distributions(root: Path) -> dict[str, Path]:
    """Import name -> folder of every distribution in the tree (``shared`` and ``packages/*``)."""
    found = {"shared": root / "shared"}
    packages = root / "packages"
    if packages.is_dir():
        found.update({p.name: p for p in sorted(packages.iterdir()) if (p / "pyproject.toml").is_file()})
    return found


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def dependency_problems(name: str, pyproject: Path, repo_names: set[str]) -> list[str]:
    """What is wrong with one distribution's names and dependencies."""
    data = tomllib.loads(pyproject.read_text())
    project = data.get("project", {})
    problems = []
    if project.get("name") != PREFIX + name:
        problems.append(f"{pyproject}: distribution name is {project.get('name')!r}, expected {PREFIX + name!r}")
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    requirements += data.get("build-system", {}).get("requires", [])
    for requirement in requirements:
        dep = _requirement_name(requirement)
        if dep in repo_names:
            problems.append(f"{pyproject}: depends on bare {dep!r} (a stranger's PyPI project); use {PREFIX + dep!r}")
    if name != "shared" and not any(_requirement_name(r) == PREFIX + "shared" for r in project.get("dependencies", [])):
        problems.append(f"{pyproject}: must depend on {PREFIX}shared")
    return problems


def imported_top_names(path: Path) -> set[str]:
    """Top-level module names a Python file imports (absolute imports only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def import_problems(name: str, folder: Path, repo_names: set[str]) -> list[str]:
    """Imports in one distribution's folder that break the dependency rule."""
    forbidden = repo_names - {name, "shared"} if name != "shared" else repo_names - {"shared"}
    problems = []
    for path in sorted(folder.rglob("*.py")):
        if any(part in {".nox", "build", ".venv"} for part in path.parts):
            continue
        for bad in sorted(imported_top_names(path) & forbidden):
            problems.append(f"{path.relative_to(folder.parent)}: imports {bad!r} ({name} may import only shared)")
    return problems


def anatomy_problems(name: str, folder: Path) -> list[str]:
    """Files and entry points every package must have (DESIGN.md, "Package anatomy")."""
    problems = [
        f"{folder}: missing {part}"
        for part in ("README.md", "CHANGELOG.md", f"src/{name}/__init__.py", "tests")
        if not (folder / part).exists()
    ]
    scripts = tomllib.loads((folder / "pyproject.toml").read_text()).get("project", {}).get("scripts", {})
    if f"{name}-repro" not in scripts:
        problems.append(f"{folder}/pyproject.toml: no console script {name}-repro (nox -s demo runs it)")
    return problems


# --- the real tree -------------------------------------------------------------------------------

DISTS = distributions(ROOT)
REPO_NAMES = PLANNED | set(DISTS)


@pytest.mark.parametrize("name", sorted(DISTS))
def test_names_and_dependencies(name):
    assert dependency_problems(name, DISTS[name] / "pyproject.toml", REPO_NAMES) == []


@pytest.mark.parametrize("name", sorted(DISTS))
def test_dependency_rule(name):
    assert import_problems(name, DISTS[name], REPO_NAMES) == []


@pytest.mark.parametrize("name", sorted(set(DISTS) - {"shared"}) or [pytest.param("none", marks=pytest.mark.skip)])
def test_package_anatomy(name):
    assert anatomy_problems(name, DISTS[name]) == []


def test_unknown_package_folders_are_flagged():
    """A folder under packages/ without a pyproject would be silently skipped by nox."""
    packages = ROOT / "packages"
    strays = [p.name for p in packages.iterdir() if p.is_dir() and not (p / "pyproject.toml").exists()]
    assert strays == []


# --- the checks catch what they must (synthetic trees) --------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_bare_shared_dependency_is_caught(tmp_path):
    _write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "reprozoo-iformer"\ndependencies = ["torch", "shared>=0.1"]\n',
    )
    problems = dependency_problems("iformer", tmp_path / "pyproject.toml", REPO_NAMES)
    assert any("bare 'shared'" in p for p in problems)
    assert any("must depend on reprozoo-shared" in p for p in problems)


def test_bare_name_in_an_extra_and_wrong_distribution_name_are_caught(tmp_path):
    _write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "tyger"\ndependencies = ["reprozoo-shared"]\n'
        '[project.optional-dependencies]\nall = ["Tyger[rdkit]"]\n',
    )
    problems = dependency_problems("tyger", tmp_path / "pyproject.toml", REPO_NAMES)
    assert any("expected 'reprozoo-tyger'" in p for p in problems)
    assert any("bare 'tyger'" in p for p in problems)


def test_cross_package_import_is_caught(tmp_path):
    _write(tmp_path / "iformer" / "src" / "iformer" / "models.py", "import torch\nfrom slimda.layers import X\n")
    _write(tmp_path / "iformer" / "tests" / "test_x.py", "import shared.data\nimport m3ed\n")
    problems = import_problems("iformer", tmp_path / "iformer", REPO_NAMES)
    assert len(problems) == 2 and "'slimda'" in problems[0] and "'m3ed'" in problems[1]


def test_shared_importing_a_package_is_caught(tmp_path):
    _write(tmp_path / "shared" / "src" / "shared" / "data.py", "def f():\n    import iformer.models\n")
    assert len(import_problems("shared", tmp_path / "shared", REPO_NAMES)) == 1
