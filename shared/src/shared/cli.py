"""Command-line conventions shared by every package.

- :class:`ArgumentParser` adds the common options (``--device --seed --out --resume --amp
  --workers --batch-size --epochs``), named presets (``--preset paper|small|demo``) whose values
  fill every option the user did not give, and one-line usage errors with exit code 2.
- :func:`repro_parser`, :func:`repro_setup` and :func:`run_repro`: the options and the body of every
  ``<name>-repro``.
- :func:`comma_list`: the argparse ``type`` of an option that takes ``a,b,c``.
- :func:`main` wraps a console-script entry point: a :class:`~shared.errors.UserError` or a
  missing file becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from shared import distributed
from shared.checkpoint import latest, resume_checkpoint, save_json
from shared.device import resolve_device
from shared.errors import UserError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: X)`` only where there is a meaningful default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's common options, presets and one-line errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._presets: dict[str, dict[str, Any]] = {}

    def add_common_args(self, *, out_help: str | None = None, workers: bool = True, epochs: bool = True) -> None:
        """Add ``--device --seed --out --resume --amp --workers --batch-size --epochs``.

        ``--batch-size`` and ``--epochs`` default to None: a preset fills them. ``workers=False`` leaves out
        ``--workers`` (data held in memory, no loader processes); ``epochs=False`` leaves out ``--epochs``
        (a run counted in iterations).
        """
        group = self.add_argument_group("common options")
        group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
        group.add_argument("--seed", type=int, default=0, help="random seed (python, numpy, torch, data order)")
        group.add_argument(
            "--out", type=Path, default=None, help=out_help or "output folder (default: runs/<package>/<timestamp>)"
        )
        group.add_argument(
            "--resume",
            action="store_true",
            help="continue from the latest checkpoint in --out (newest run if no --out)",
        )
        group.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on CUDA)")
        if workers:
            group.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
        group.add_argument("--batch-size", type=int, default=None, help="batch size per process")
        if epochs:
            group.add_argument("--epochs", type=int, default=None, help="training epochs")

    def set_presets(self, presets: Mapping[str, Mapping[str, Any]], default: str) -> None:
        """Add ``--preset``: each named preset gives defaults for options left unset (None).

        The help of every option a preset sets lists the preset values.
        """
        if default not in presets:
            raise ValueError(f"default preset {default!r} is not among {sorted(presets)}")
        self._presets = {name: dict(values) for name, values in presets.items()}
        dests = {action.dest: action for action in self._actions}
        for values in self._presets.values():
            unknown = set(values) - set(dests)
            if unknown:
                raise ValueError(f"preset sets unknown option(s) {sorted(unknown)}")
        for dest in sorted({key for values in self._presets.values() for key in values}):
            action = dests[dest]
            action.default = None
            by_preset = ", ".join(f"{name}={values[dest]}" for name, values in self._presets.items() if dest in values)
            action.help = f"{action.help or ''} (by preset: {by_preset})".strip()
        self.add_argument("--preset", choices=sorted(self._presets), default=default, help="named set of defaults")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        parsed = super().parse_args(args, namespace)
        for dest, value in self._presets.get(getattr(parsed, "preset", None), {}).items():
            if getattr(parsed, dest) is None:
                setattr(parsed, dest, value)
        return parsed

    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def comma_list(convert: Callable[[str], Any] = str, what: str = "names") -> Callable[[str], list]:
    """An argparse ``type`` for ``--option a,b,c``: each non-blank item, stripped, through ``convert``; an item
    ``convert`` refuses (``ValueError``) is a usage error, "'TEXT' is not a comma-separated list of ``what``"."""

    def parse(text: str) -> list:
        try:
            return [convert(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {what}") from None

    return parse


def repro_parser(prog: str, description: str, presets: Mapping[str, str], default: str = "demo") -> ArgumentParser:
    """The parser every ``<name>-repro`` starts from: ``--seeds --out --preset --device --threads``.

    ``presets`` maps each scale the package offers (``demo``, and ``small`` where it has one) to a short
    description shown in ``--help``; the package adds its own options after.
    """
    if default not in presets:
        raise ValueError(f"default preset {default!r} is not among {sorted(presets)}")
    parser = ArgumentParser(prog=prog, description=description)
    group = parser.add_argument_group("reproduction options (every <name>-repro)")
    group.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    shown = "; ".join(f"{name}: {text}" for name, text in presets.items()).replace("%", "%%")
    group.add_argument("--preset", choices=list(presets), default=default, help=f"scale of every run ({shown})")
    group.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: runs/<package>-repro/<timestamp>); runs recorded there by this version "
        "with the same configuration are reused, the others run again",
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` for a ``--threads`` option; None keeps torch's choice."""
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def repro_setup(args: argparse.Namespace, package: str) -> tuple[Path, torch.device]:
    """Check the common repro options, set the thread count, and return ``(out folder, device)``."""
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    set_threads(args.threads)
    device = resolve_device(args.device)
    out = Path(args.out) if args.out is not None else Path("runs") / f"{package}-repro" / time.strftime("%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: choose a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out, device


def run_repro(
    parser: ArgumentParser,
    argv: Sequence[str] | None,
    package: str,
    run: Callable[..., dict[str, Any]],
    *options: str,
) -> dict[str, Any]:
    """The body of every ``<name>-repro``: parse, :func:`repro_setup`, then
    ``run(out, device, seeds=..., preset=..., **{option: args.option for option in options})``; prints the
    ``results.md`` it wrote and returns its results. ``parser`` is a :func:`repro_parser` with the package's
    own ``options`` added."""
    args = parser.parse_args(argv)
    out, device = repro_setup(args, package)
    results = run(out, device, seeds=args.seeds, preset=args.preset, **{o: getattr(args, o) for o in options})
    print((out / "results.md").read_text(encoding="utf-8"), flush=True)
    return results


def run_dir(out: Path | None, package: str, resume: bool) -> Path:
    """The output folder of a run, checked so that nothing already written is lost.

    - no ``--out``: a new ``runs/<package>/<timestamp>``, or with ``--resume`` the newest run there
      that holds a checkpoint;
    - ``--out`` holding a finished or started run without ``--resume``: refused;
    - ``--resume`` where there is no checkpoint: refused.
    """
    if out is None:
        root = Path("runs") / package
        if resume:
            runs = sorted(p for p in root.glob("*") if latest(p) is not None) if root.is_dir() else []
            if not runs:
                raise UserError(f"--resume: no run with a checkpoint under {root}; pass --out RUN_FOLDER")
            return runs[-1]
        out = root / time.strftime("%Y%m%d-%H%M%S")
    out = Path(out)
    if resume:
        resume_checkpoint(out)
    elif latest(out) is not None or (out / "results.json").exists():
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    if distributed.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def run_folder(out: Path | None, package: str, resume: bool) -> Iterator[Path]:
    """:func:`run_dir` around the body of a run: a folder made here is removed again if the run fails
    before writing anything into it, so a bad option or missing data leaves no empty ``--out`` behind."""
    made = not resume and (out is None or not Path(out).exists())
    folder = run_dir(out, package, resume)
    try:
        yield folder
    except BaseException:
        if made and distributed.is_main_process() and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def write_config(out: Path, args: argparse.Namespace, **extra: Any) -> None:
    """Write ``config.json`` (all options plus ``extra``) on the main process."""
    if distributed.is_main_process():
        save_json(out / "config.json", {**vars(args), **extra})


def main(entry: Callable[[Sequence[str] | None], Any]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a command ``entry(argv)``: user errors become one line on stderr and exit code 2.

    The wrapped function returns the exit code: ``entry``'s result when it is an int, else 0 (argparse's
    exits give theirs). The process group (under torchrun) is left cleanly whatever happens.
    """

    @functools.wraps(entry)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        prog = os.path.basename(sys.argv[0]) or entry.__name__
        try:
            result = entry(argv)
            return result if isinstance(result, int) and not isinstance(result, bool) else 0
        except UserError as exc:
            return _fail(prog, str(exc))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
            if exc.filename is None:
                raise
            return _fail(prog, f"{exc.strerror or type(exc).__name__}: {exc.filename}")
        except KeyboardInterrupt:
            return _fail(prog, "interrupted", code=130)
        except SystemExit as exc:  # argparse's --help and usage errors: their exit code, already printed
            return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            distributed.shutdown()

    return wrapper


def console_script(command: Callable[[Sequence[str] | None], Any]) -> Callable[[], None]:
    """A ``[project.scripts]`` entry point running ``command`` on ``sys.argv`` through :func:`main`."""
    wrapped = main(command)
    return lambda: sys.exit(wrapped(None))


def run_command(
    commands: Mapping[str, Callable[[Sequence[str] | None], Any]], argv: Sequence[str] | None = None
) -> int:
    """``python -m <package>.cli COMMAND [options]``: the form torchrun launches."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in commands:
        print(f"usage: {os.path.basename(sys.argv[0])} {{{','.join(commands)}}} [options]", file=sys.stderr)
        return 2
    return main(commands[argv[0]])(argv[1:])


def _fail(prog: str, message: str, code: int = 2) -> int:
    rank = "" if distributed.is_main_process() else f"[rank {distributed.get_rank()}] "
    line = " ".join(message.split())
    print(f"{rank}{prog}: error: {line}", file=sys.stderr, flush=True)
    return code
