"""The rule engine: exact evaluation of rules on whole traces, and why a trace violates one.

Modelled on Tempo's ``pkg/traceql`` (AST, validation and execution in one package): a rule's
invariant is compiled once (``compiled``), its violations explained from the same compiled
parts (``explain``), traces scanned (``scan``) and rule examples run (``examples``). It sits
above ``rules`` and ``traces`` and below everything that fetches, stores or sends.
"""

from checker.engine.compiled import CompiledInvariant
from checker.engine.examples import run_examples
from checker.engine.scan import Scanner
from checker.engine.violation import Violation

__all__ = ["CompiledInvariant", "Scanner", "Violation", "run_examples"]
