"""Repository rules of DESIGN.md, checked by reading files (run by ``nox -s lint``).

- Distribution names carry the project prefix (``reprozoo-shared``, ``reprozoo-<name>``), and no
  pyproject depends on a bare repo name such as ``shared``: PyPI holds unrelated projects under
  those names (dependency confusion).
- The dependency rule: ``shared`` imports no package of this repo; a package imports ``shared``
  and never another package of this repo.
- Every package has the anatomy the demo and CI rely on.
- Layering: ``cli.py`` is the outermost module of a package; no module of the package imports it.
- Packaging: the licence ships in every distribution, the version is written once (in ``pyproject.toml``).
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


def cli_import_problems(name: str, folder: Path) -> list[str]:
    """Modules of ``src/<name>`` (``cli.py`` aside) that import ``<name>.cli``: the CLI is the outermost layer.

    The tests are not modules of the package and may drive the CLI.
    """
    problems = []
    source = folder / "src" / name
    for path in sorted(source.rglob("*.py")):
        if path == source / "cli.py":
            continue
        package = ".".join([name, *path.parent.relative_to(source).parts])
        if f"{name}.cli" in imported_modules(ast.parse(path.read_text(), filename=str(path)), package):
            problems.append(f"{path.relative_to(folder.parent)}: imports {name}.cli (cli.py is the outermost layer)")
    return problems


def imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Absolute names of the modules (and of the submodules named by ``from X import y``) a module imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def packaging_problems(name: str, folder: Path, root: Path) -> list[str]:
    """The licence file shipped, the version written once, a changelog heading for it."""
    project = tomllib.loads((folder / "pyproject.toml").read_text()).get("project", {})
    problems = []
    licence = folder / "LICENSE"
    if project.get("license-files") != ["LICENSE"] or not licence.is_file():
        problems.append(f'{folder}: ship the licence: license-files = ["LICENSE"] and a LICENSE file')
    elif licence.read_bytes() != (root / "LICENSE").read_bytes():
        problems.append(f"{licence}: differs from the repository's LICENSE")
    init = folder / "src" / name / "__init__.py"
    if init.is_file() and re.search(r"^__version__\s*=\s*[\"']", init.read_text(), re.MULTILINE):
        problems.append(f"{init}: __version__ is a literal; read it with importlib.metadata.version")
    changelog = folder / "CHANGELOG.md"
    version = project.get("version")
    if changelog.is_file() and not re.search(rf"^## {re.escape(str(version))}\b", changelog.read_text(), re.MULTILINE):
        problems.append(f"{changelog}: no '## {version}' heading for the version in pyproject.toml")
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


@pytest.mark.parametrize("name", sorted(set(DISTS) - {"shared"}) or [pytest.param("none", marks=pytest.mark.skip)])
def test_no_module_imports_the_cli(name):
    assert cli_import_problems(name, DISTS[name]) == []


@pytest.mark.parametrize("name", sorted(DISTS))
def test_packaging(name):
    assert packaging_problems(name, DISTS[name], ROOT) == []


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


@pytest.mark.parametrize(
    "line",
    [
        "from iformer.cli import train_command",
        "from iformer import cli",
        "import iformer.cli",
        "from iformer import cli as icli, models",
        "from . import cli",
        "from .cli import COMMANDS",
        "def f():\n    from iformer.cli import train_command",
    ],
)
def test_a_module_importing_the_cli_is_caught(tmp_path, line):
    package = tmp_path / "iformer"
    _write(package / "src" / "iformer" / "cli.py", "from iformer import engine\n")
    _write(package / "src" / "iformer" / "repro.py", f"import torch\n{line}\n")
    problems = cli_import_problems("iformer", package)
    assert len(problems) == 1 and "repro.py: imports iformer.cli" in problems[0]


def test_clean_layering_and_the_cli_itself_pass(tmp_path):
    package = tmp_path / "iformer"
    _write(package / "src" / "iformer" / "cli.py", "from iformer import engine, repro\nfrom . import config\n")
    _write(package / "src" / "iformer" / "repro.py", "from iformer.engine import fit\nfrom iformer import clip\n")
    _write(package / "src" / "iformer" / "sub" / "x.py", "from . import cli\n")  # sub.cli, not iformer.cli
    _write(package / "tests" / "test_cli.py", "from iformer import cli\n")
    assert cli_import_problems("iformer", package) == []


def test_packaging_problems_are_caught(tmp_path):
    (tmp_path / "LICENSE").write_text("Apache")
    package = tmp_path / "iformer"
    _write(package / "pyproject.toml", '[project]\nname = "reprozoo-iformer"\nversion = "0.2.0"\n')
    _write(package / "src" / "iformer" / "__init__.py", '__version__ = "0.2.0"\n')
    _write(package / "CHANGELOG.md", "# Changelog\n\n## 0.1.0\n")
    problems = packaging_problems("iformer", package, tmp_path)
    assert len(problems) == 3
    assert "ship the licence" in problems[0] and "literal" in problems[1] and "'## 0.2.0'" in problems[2]
