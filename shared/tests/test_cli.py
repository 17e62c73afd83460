import subprocess
import sys
from pathlib import Path

import pytest

from shared import cli
from shared.checkpoint import checkpoint_path, save_checkpoint
from shared.errors import UserError, require_path

PRESETS = {"demo": {"epochs": 3, "batch_size": 8}, "paper": {"epochs": 300, "batch_size": 1024}}


def _parser():
    parser = cli.ArgumentParser(prog="toy-train")
    parser.add_argument("--lr", type=float, default=None, help="learning rate")
    parser.add_common_args()
    parser.set_presets({**PRESETS, "paper": {**PRESETS["paper"], "lr": 0.1}}, default="demo")
    return parser


def test_presets_fill_only_what_the_user_left_unset():
    args = _parser().parse_args([])
    assert (args.preset, args.epochs, args.batch_size, args.lr) == ("demo", 3, 8, None)
    args = _parser().parse_args(["--preset", "paper", "--epochs", "5"])
    assert (args.epochs, args.batch_size, args.lr) == (5, 1024, 0.1)
    assert (args.device, args.seed, args.workers, args.amp, args.resume) == ("auto", 0, 0, False, False)


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--device", "--seed", "--out", "--resume", "--amp", "--workers", "--batch-size", "--epochs"):
        assert expected in text
    assert "by preset: demo=3, paper=300" in text
    assert "(default: auto)" in text and "(default: None)" not in text


def test_usage_error_is_one_line_and_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--preset", "huge"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'huge'" in err


def test_preset_naming_an_unknown_option_is_a_bug():
    parser = cli.ArgumentParser()
    parser.add_common_args()
    with pytest.raises(ValueError, match="unknown option"):
        parser.set_presets({"demo": {"epochz": 3}}, default="demo")


@cli.main
def _open_data(argv):
    with open(argv[0]) as handle:
        handle.read()


@cli.main
def _check_data(argv):
    require_path(argv[0], "dataset folder", kind="dir")


def test_main_turns_a_missing_path_into_one_line_and_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "no-such-file.csv"
    assert _open_data([str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "Traceback" not in err
    assert _check_data([str(missing)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"error: dataset folder not found: {missing}")
    assert _open_data([__file__]) == 0


def test_main_in_a_real_process_prints_no_traceback(tmp_path):
    code = (
        "import sys\nfrom shared.cli import main\nfrom shared.checkpoint import load_checkpoint\n"
        "sys.exit(main(lambda argv: load_checkpoint(sys.argv[1]))())"
    )
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint at all")
    result = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "corrupt or truncated" in result.stderr and str(bad) in result.stderr


def test_main_lets_bugs_raise():
    @cli.main
    def buggy(argv):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        buggy([])


def test_run_dir_never_overwrites_a_run(tmp_path, monkeypatch):
    out = cli.run_dir(tmp_path / "run", "toy", resume=False)
    assert out.is_dir()
    with pytest.raises(UserError, match="no checkpoint"):
        cli.run_dir(out, "toy", resume=True)
    save_checkpoint(checkpoint_path(out, 1), {"step": 1})
    with pytest.raises(UserError, match="already holds a run: pass --resume"):
        cli.run_dir(out, "toy", resume=False)
    assert cli.run_dir(out, "toy", resume=True) == out


def test_run_dir_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no run with a checkpoint"):
        cli.run_dir(None, "toy", resume=True)
    out = cli.run_dir(None, "toy", resume=False)
    assert out.parent == tmp_path / "runs" / "toy" or out.parent.resolve() == (tmp_path / "runs" / "toy").resolve()
    save_checkpoint(checkpoint_path(out, 2), {})
    assert cli.run_dir(None, "toy", resume=True) == out


def test_write_config(tmp_path):
    args = _parser().parse_args(["--out", str(tmp_path)])
    cli.write_config(tmp_path, args, version="1")
    text = (tmp_path / "config.json").read_text()
    assert '"epochs": 3' in text and '"version": "1"' in text


def test_run_command_dispatches_and_console_script_exits(capsys, monkeypatch):
    seen = []
    commands = {"train": lambda argv: seen.append(list(argv)) or {"done": True}, "fail": _check_data}
    assert cli.run_command(commands, ["train", "--epochs", "2"]) == 0 and seen == [["--epochs", "2"]]
    assert cli.run_command(commands, ["fail", "/no/such/folder"]) == 2
    assert "dataset folder not found: /no/such/folder" in capsys.readouterr().err
    assert cli.run_command(commands, ["predict"]) == 2
    assert "{train,fail}" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["toy-train", "/no/such/folder"])
    with pytest.raises(SystemExit) as exit_info:
        cli.console_script(lambda argv: _check_data(argv if argv is not None else sys.argv[1:]))()
    assert exit_info.value.code == 2


def test_main_returns_argparse_exit_codes(capsys):
    wrapped = cli.main(lambda argv: _parser().parse_args(argv))
    assert wrapped(["--help"]) == 0
    assert wrapped(["--epochs", "many"]) == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_common_args_can_leave_out_workers_and_epochs():
    parser = cli.ArgumentParser(prog="toy-train")
    parser.add_common_args(workers=False, epochs=False)
    args = parser.parse_args([])
    assert not hasattr(args, "workers") and not hasattr(args, "epochs") and args.batch_size is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--epochs", "3"])


def test_repro_parser_and_setup(tmp_path, monkeypatch, capsys):
    import torch

    parser = cli.repro_parser("toy-repro", "toy", {"demo": "minutes", "small": "longer"})
    parser.add_argument("--noise", default="sym80")
    args = parser.parse_args(["--out", str(tmp_path / "r"), "--threads", "1", "--preset", "small"])
    assert (args.seeds, args.preset, args.device, args.noise) == (3, "small", "auto", "sym80")
    threads = torch.get_num_threads()
    try:
        out, device = cli.repro_setup(args, "toy")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert out == tmp_path / "r" and out.is_dir() and device.type in ("cpu", "cuda", "mps")
    assert cli.repro_setup(args, "toy")[0] == out  # an existing --out is continued (its runs are reused)
    monkeypatch.chdir(tmp_path)
    default = cli.repro_setup(parser.parse_args(["--device", "cpu"]), "toy")[0]
    assert default.parent == Path("runs") / "toy-repro"
    for bad, message in ((["--seeds", "0"], "--seeds"), (["--threads", "0"], "--threads")):
        with pytest.raises(UserError, match=message):
            cli.repro_setup(parser.parse_args(bad), "toy")
    with pytest.raises(SystemExit):
        parser.parse_args(["--preset", "paper"])
    assert "small: longer" in " ".join(parser.format_help().split())


def test_run_repro_parses_sets_up_runs_and_prints(tmp_path, capsys):
    calls = []

    def run(out, device, *, seeds, preset, epochs):
        calls.append((out, device.type, seeds, preset, epochs))
        (out / "results.md").write_text("# toy results\n")
        return {"headline": "ok"}

    parser = cli.repro_parser("toy-repro", "toy", {"demo": "100% of nothing"})  # a % in the help is kept
    parser.add_argument("--epochs", type=int, default=None)
    argv = ["--out", str(tmp_path / "r"), "--seeds", "2", "--device", "cpu", "--epochs", "4"]
    assert cli.run_repro(parser, argv, "toy", run, "epochs") == {"headline": "ok"}
    assert calls == [(tmp_path / "r", "cpu", 2, "demo", 4)]
    assert capsys.readouterr().out.startswith("# toy results")
    assert "100% of nothing" in parser.format_help()


def test_run_folder_leaves_no_empty_folder_after_a_failure(tmp_path):
    with pytest.raises(UserError), cli.run_folder(tmp_path / "new", "toy", resume=False) as out:
        assert out.is_dir()
        raise UserError("missing data")
    assert not (tmp_path / "new").exists()
    with pytest.raises(RuntimeError), cli.run_folder(tmp_path / "written", "toy", resume=False) as out:
        (out / "metrics.jsonl").write_text("{}\n")
        raise RuntimeError("crash after the first epoch")
    assert (tmp_path / "written" / "metrics.jsonl").is_file()  # what a run wrote is kept
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError), cli.run_folder(tmp_path / "mine", "toy", resume=False):
        raise UserError("missing data")
    assert (tmp_path / "mine").is_dir()  # the user's own folder stays
    with cli.run_folder(tmp_path / "ok", "toy", resume=False) as out:
        pass
    assert out.is_dir()


def test_comma_list_is_an_argparse_type_with_a_one_line_error(capsys):
    parser = cli.ArgumentParser(prog="tool")
    parser.add_argument("--k", type=cli.comma_list(int, "integers"), default=[1])
    parser.add_argument("--names", type=cli.comma_list(), default=None)
    args = parser.parse_args(["--k", " 3, 5,,", "--names", "a, b"])
    assert args.k == [3, 5] and args.names == ["a", "b"]
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--k", "3,x"])
    assert exit_.value.code == 2
    assert "'3,x' is not a comma-separated list of integers" in capsys.readouterr().err
