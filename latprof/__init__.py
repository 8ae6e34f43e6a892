"""latprof: per-operator decode latency look-up tables, whole-model estimates, end-to-end checks."""

__version__ = "0.1.0"
