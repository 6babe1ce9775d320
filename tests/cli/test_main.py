"""The `latentwatch` command: one module per command, imported only when that command runs."""

from __future__ import annotations

import subprocess
import sys
from importlib import import_module

from latentwatch.cli.main import COMMANDS, build_parser


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
