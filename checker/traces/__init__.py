"""Traces: the in-memory model and the OTLP/JSON reader."""
