"""The `latentwatch` command: one module per command, imported only when that command runs."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import import_module

import pytest

import latentwatch
from latentwatch.cli.main import COMMANDS, build_parser, main


def test_every_command_has_a_module_with_run() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(COMMANDS) == set(sub.choices)
    for command, module in COMMANDS.items():
        assert callable(import_module(module).run), command


def test_serve_score_and_bias_report_import_neither_torch_nor_onnx() -> None:
    code = (
        "import sys, latentwatch.cli.main, latentwatch.cli.serve, latentwatch.cli.score, "
        "latentwatch.cli.bias_report; "
        "print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_library_modules_under_the_cli_neither_parse_nor_print() -> None:
    # Only latentwatch/cli/ parses arguments: the typed APIs the commands call take no Namespace.
    import inspect

    import latentwatch.models.training as training
    import latentwatch.service.server as server

    for module in (training, server):
        source = inspect.getsource(module)
        assert "argparse" not in source, module.__name__
        assert "print(" not in source, module.__name__


def _options() -> list[tuple[str, argparse.Action]]:
    """(command, action) for every option and positional of every command, and the top level."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for command, each in [("latentwatch", parser), *sub.choices.items()]:
        for action in each._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                found.append((command, action))
    return found


def test_every_option_of_every_command_has_help_and_says_its_default() -> None:
    missing = []
    for command, action in _options():
        name = "/".join(action.option_strings) or action.dest
        text = action.help or ""
        if not text:
            missing.append(f"{command} {name}: no help")
        elif (action.option_strings and not action.required and action.default is not None
              and not isinstance(action, argparse._VersionAction) and "default" not in text):
            missing.append(f"{command} {name}: no default in {text!r}")
        elif action.option_strings and not action.required and action.default is None \
                and "default" not in text:
            missing.append(f"{command} {name}: defaults to None without saying what that means")
    assert not missing, "\n".join(missing)


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--help"]) == 0
    assert "(default: 0.05)" in capsys.readouterr().out


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"latentwatch {latentwatch.__version__}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--log-level", "LOUD", "serve"],
         "latentwatch: error: argument --log-level: invalid choice: 'LOUD'"),
        (["train", "--data", "digits", "--model", "vae", "--out", "x", "--epochs", "-5"],
         "latentwatch train: error: argument --epochs: expected an integer >= 1, got '-5'"),
        (["serve", "--port", "70000"],
         "latentwatch serve: error: argument --port: expected a port in 0..65535"),
        (["export", "run", "--repo", "r", "--name", "n", "--default-alpha", "1.5"],
         "latentwatch export: error: argument --default-alpha: expected a number in (0, 1)"),
        (["score", "--server", "s", "--model", "m", "--data", "d", "--out", "o",
          "--batch-rows", "0"],
         "latentwatch score: error: argument --batch-rows: expected an integer >= 1"),
    ],
)
def test_bad_values_are_one_line_errors_with_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_a_bad_log_level_in_a_real_process_prints_no_traceback() -> None:
    done = subprocess.run([sys.executable, "-m", "latentwatch", "--log-level", "LOUD", "serve"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
