"""Thin kopf glue: decorators that parse the body once and call the engine."""
