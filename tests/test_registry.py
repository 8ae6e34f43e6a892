"""The operator registry: one entry per family that specs, blocks, grids and checks all read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from latprof import registry
from latprof.errors import InputError
from latprof.ops import backend_unavailable, block_class
from latprof.registry import OPERATOR_NAMES, OPERATORS, build_spec, operator, spec_from_key


@pytest.mark.parametrize("name", OPERATOR_NAMES)
def test_every_entry_resolves_to_a_block_of_its_spec(name):
    entry = operator(name)
    cls = block_class(name)
    assert entry.spec.op == name and entry.backend_names[0] == "torch"
    block = cls(build_spec(name, 128, **_small(name)), backend="torch")
    assert block.spec.op == name and block.backend == "torch"


def _small(name: str) -> dict:
    return {"vocab_size": 64} if name in ("embedding", "lm_head") else {}


def test_lookups_are_exact_and_a_miss_lists_the_names():
    with pytest.raises(InputError, match="valid operators: attention, attention_window, ffn"):
        operator("attn")
    with pytest.raises(InputError, match="unknown operator 'Attention'"):
        operator("Attention")  # no case folding, no substrings
    with pytest.raises(InputError, match="valid for ffn: torch"):
        operator("ffn").backend("sdpa")


def test_backend_kinds_and_triton_flags():
    kinds = {(op, b.name): (b.kind, b.triton) for op, e in OPERATORS.items() for b in e.backends}
    assert kinds[("attention", "triton")] == ("ours", True)
    assert kinds[("attention", "flash_attn")] == ("library", False)
    assert kinds[("mamba2", "mamba_ssm")] == ("library", True)
    assert kinds[("gla", "fla")] == ("library", True)
    assert kinds[("ffn", "torch")] == ("torch", False)
    assert not operator("moe").backend("torch").graph_capturable
    assert registry.IMPLICIT_OPS == ("embedding", "lm_head")


def test_backend_checks_come_from_the_registry(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert backend_unavailable("ffn", "torch", "cpu") is None
    assert "interpreter" in backend_unavailable("mamba2", "triton", "cpu")
    assert "CUDA devices only" in backend_unavailable("attention", "flash_attn", "cpu")
    with pytest.raises(InputError, match="unknown backend 'cuda'"):
        backend_unavailable("attention", "cuda", "cpu")


@pytest.mark.parametrize(
    "key",
    ["ffn(width=256", "ffn width=256)", "ffn(width=abc)", "(width=256)", "ffn()"],
)
def test_malformed_spec_text_is_refused(key):
    with pytest.raises(InputError):
        spec_from_key(key)


def test_spec_text_round_trips():
    spec = build_spec("attention", 2048, heads=16, kv_heads=4)
    assert spec_from_key(spec.key) == spec


def test_no_import_cycles_among_latprof_modules():
    """Import every latprof module in a fresh interpreter, each first in its own process, so a
    cycle broken only by import order would fail here."""
    modules = [
        "latprof.model",
        "latprof.model_spec",
        "latprof.config_yaml",
        "latprof.config_hf",
        "latprof.registry",
        "latprof.settings",
        "latprof.specs",
        "latprof.grid",
        "latprof.lut",
        "latprof.estimate",
        "latprof.ops",
        "latprof.ops.base",
        "latprof.measure",
        "latprof.e2e",
        "latprof.sweep",
        "latprof.control",
        "latprof.compare",
    ]
    code = "import importlib, sys; importlib.import_module(sys.argv[1])"
    for module in modules:
        result = subprocess.run(
            [sys.executable, "-c", code, module], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{module}: {result.stderr[-2000:]}"
