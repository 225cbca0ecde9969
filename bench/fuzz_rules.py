"""Coverage-guided fuzzing of the rule loader and parser with atheris, run on demand.

Why it exists: rule files are input the daemon must survive whatever they hold (issue 11).
``tests/test_hostile_rules.py`` keeps the known cases fixed and explores with hypothesis;
this target lets libFuzzer search the YAML layer, the grammar and everything that walks a
loaded rule for a new crash, for as long as one cares to run it. The invariant is the same:
``load_text`` returns a RuleError with a place, or rules that compile, print and evaluate.
Any other exception, or a hang (libFuzzer's ``-timeout``), is a finding.

Run on demand (not part of the test suite; atheris is not a project dependency)::

    /work/main/.venv/bin/pip install atheris
    /work/main/.venv/bin/python bench/fuzz_rules.py -atheris_runs=200000 -timeout=10 [CORPUS_DIR]
"""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from checker.engine import CompiledInvariant
    from checker.engine.examples import example_trace
    from checker.errors import RuleError, SourceLocation
    from checker.rules.load import load_text
    from checker.rules.printer import invariant as print_invariant
    from checker.rules.rule import Example, ExampleSpan
    from checker.traceql import compile_rule

TRACE = example_trace("fuzz", Example("e", "pass", (
    ExampleSpan("a", attributes={"x": 1, "k": "v"}), ExampleSpan("b.c", attributes={"flag": True}),
), SourceLocation("fuzz")))


def check(text: str) -> None:
    """A clear error with a place, or rules every command can use."""
    result = load_text(text, "fuzz.yaml")
    for error in result.errors:
        if not isinstance(error, RuleError) or error.location is None or error.location.line is None:
            raise AssertionError(f"an error without a place: {error!r}")
        str(error).encode()
    for rule in result.rules:
        compile_rule(rule.invariant).describe()
        print_invariant(rule.invariant)
        CompiledInvariant.build(rule.invariant).violated_by(TRACE)


def one_input(data: bytes) -> None:
    """Half the inputs are whole files, half a condition in a valid file (to reach the grammar)."""
    provider = atheris.FuzzedDataProvider(data)
    as_condition = provider.ConsumeBool()
    text = provider.ConsumeUnicode(provider.remaining_bytes())
    if as_condition:
        text = f"rules:\n  - id: r\n    condition: {json.dumps(text)}\n"
    check(text)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
