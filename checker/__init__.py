"""BeTrace Checker: behavioural invariants over OpenTelemetry traces."""

__version__ = "0.1.0"
