"""Score functions for the search tests (`--score python:search_scores:...`)."""

from __future__ import annotations


def negative_attention(model) -> float:
    """Prefers models with fewer attention layers, then more parameters."""
    return -sum(s.op == "attention" for s in model.layers) + model.param_count() / 1e12


def broken(model) -> float:
    raise RuntimeError("this score always fails")
