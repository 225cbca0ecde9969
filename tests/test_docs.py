"""The README documents every command, option and metric, and every option has help text."""

from __future__ import annotations

import argparse
from pathlib import Path

from checker.cli import build_parser
from checker.daemon.metrics import Metrics

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


Command = tuple[str, argparse.ArgumentParser]


def commands(parser: argparse.ArgumentParser, prefix: str = "betrace") -> list[Command]:
    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.extend(commands(child, f"{prefix} {name}"))
    return found


def test_every_command_and_option_has_help_and_is_in_the_readme() -> None:
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


def test_every_metric_is_in_the_readme() -> None:
    names = {family.name + ("_total" if family.type == "counter" else "")
             for family in Metrics(dict).registry.collect()}
    assert len(names) > 15
    assert [] == sorted(name for name in names if f"`{name}`" not in README)
