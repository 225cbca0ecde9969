"""The documentation (README and docs/) covers every command, option and metric, and the site builds."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docs_text import ROOT, everything

from checker.cli import build_parser
from checker.daemon.metrics import Metrics

README = everything()


Command = tuple[str, argparse.ArgumentParser]


def commands(parser: argparse.ArgumentParser, prefix: str = "betrace") -> list[Command]:
    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.extend(commands(child, f"{prefix} {name}"))
    return found


def test_every_command_and_option_has_help_and_is_documented() -> None:
    missing = []
    found = commands(build_parser())
    assert len(found) > 12
    for name, parser in found:
        subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if name != "betrace" and not subcommands and f"`{name}" not in README:
            missing.append(name)
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{name} {action.dest}: no help text"
            missing.extend(f"{name} {option}" for option in action.option_strings
                           if option.startswith("--") and option not in README)
        if subcommands:
            for choice in subcommands[0]._choices_actions:
                assert choice.help, f"{name} {choice.dest}: no help text"
    assert [] == missing


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """Every page in the nav, every link and anchor resolving, the README parts it includes found."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("no mkdocs: install the dev extras, pip install -e '.[dev]'")
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],  # noqa: S603
                            cwd=ROOT, capture_output=True, text=True, check=False,
                            env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert 0 == result.returncode, result.stderr
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "five-minute tour" in home.lower()  # the README's parts were included


def test_every_metric_is_documented() -> None:
    names = {family.name + ("_total" if family.type == "counter" else "")
             for family in Metrics(dict).registry.collect()}
    assert len(names) > 15
    assert [] == sorted(name for name in names if f"`{name}`" not in README)
