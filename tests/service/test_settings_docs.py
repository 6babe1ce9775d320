"""The README's settings tables list every setting with its real default, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from latentwatch.service.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `LATENTWATCH_([A-Z0-9_]+)` \| `([^`]*)` \| (.+) \|$")


def _documented() -> dict[str, str]:
    section = README.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [ROW.match(line) for line in section.splitlines()]
    return {m.group(1).lower(): m.group(2) for m in rows if m is not None}


def _shown(default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def test_every_setting_is_documented_with_its_default() -> None:
    documented = _documented()
    fields = Settings.model_fields
    assert sorted(documented) == sorted(fields)
    for name, field in fields.items():
        assert documented[name] == _shown(field.default), name


def test_every_setting_reads_its_environment_variable(monkeypatch) -> None:
    monkeypatch.setenv("LATENTWATCH_MAX_CONCURRENT_BIAS_REPORTS", "7")
    monkeypatch.setenv("LATENTWATCH_RELOAD_INTERVAL_S", "0")
    settings = Settings()
    assert settings.max_concurrent_bias_reports == 7
    assert settings.reload_interval_s == 0
