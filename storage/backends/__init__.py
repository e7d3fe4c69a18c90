"""Backends: where payloads live."""
