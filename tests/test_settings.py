"""One settings resolver for every command: lists, defaults per device, backends."""

from __future__ import annotations

import pytest

from latprof.errors import InputError
from latprof.settings import (
    BackendRequest,
    Settings,
    default_dtype,
    parse_count,
    parse_counts,
    resolve_mode,
)


def test_lists_parse_one_way():
    assert parse_counts("1,8,32", "batch") == (1, 8, 32)
    assert parse_counts(" 8k, 2 ", "context") == (8192, 2)
    assert parse_counts(4, "batch") == (4,) and parse_counts([1, 2], "batch") == (1, 2)
    assert parse_count("8k", "prompt", 0) == 8192 and parse_count("0", "prompt", 0) == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1,x", "not an integer"),
        ("0", r"must be >= 1 \(a positive integer\)"),
        ("", "give at least one value"),
        ([True], "not an integer"),
        ("1.5", "not an integer"),
    ],
)
def test_bad_lists(value, message):
    with pytest.raises(InputError, match=message):
        parse_counts(value, "batch")


def test_one_value_where_a_command_takes_one():
    with pytest.raises(InputError, match="is not one integer"):
        parse_count("1,8", "batch")
    with pytest.raises(InputError, match="is not one integer"):
        Settings.resolve(device="cpu", batch="1,8", one_batch=True)
    assert Settings.resolve(device="cpu", batch="8", one_batch=True).batch_one == 8


def test_defaults_follow_the_device():
    cpu = Settings.resolve(device="cpu")
    assert (cpu.device, cpu.dtype, cpu.mode) == ("cpu", "float32", "eager")
    cuda = Settings.for_device("cuda", dtype="bf16")
    assert (cuda.dtype, cuda.mode) == ("bfloat16", "graph")
    assert default_dtype("cuda") == "bfloat16" and default_dtype("cpu") == "float32"
    with pytest.raises(InputError, match="only on cuda"):
        resolve_mode("graph", "cpu")
    with pytest.raises(InputError, match="unknown device"):
        Settings.resolve(device="tpu")


def test_estimating_leaves_unset_values_to_the_lut():
    s = Settings.resolve(measure=False)
    assert (s.device, s.dtype, s.mode) == (None, None, None)
    named = Settings.resolve(device="NVIDIA H100 80GB HBM3", dtype="fp16", measure=False)
    assert named.device == "NVIDIA H100 80GB HBM3" and named.dtype == "float16"
    with pytest.raises(InputError, match="unknown mode"):
        Settings.resolve(mode="lazy", measure=False)


def test_backend_requests():
    r = BackendRequest.parse("torch, attention=sdpa,attention=triton")
    assert r.general == ("torch",) and r.per_op_dict == {"attention": ("sdpa", "triton")}
    assert str(r) == "torch,attention=sdpa,attention=triton"
    assert BackendRequest.parse({"ffn": "torch"}).single() == (None, {"ffn": "torch"})
    with pytest.raises(InputError, match="two backends for attention"):
        r.single()
    with pytest.raises(InputError, match="unknown operator 'atention'"):
        BackendRequest.parse("atention=sdpa")


def test_one_backend_per_operator_of_a_model():
    """As the estimate chooses rows: op=name, else the general name where the operator has it,
    else torch; a general name no operator has is an error."""
    r = BackendRequest.parse("triton,ffn=torch")
    assert r.for_ops(["attention", "ffn", "mamba2", "deltanet"]) == {
        "attention": "triton",
        "ffn": "torch",
        "mamba2": "triton",
        "deltanet": "torch",
    }
    assert BackendRequest().for_ops(["attention"]) == {"attention": "torch"}
    with pytest.raises(InputError, match="none of the model's operators has it"):
        BackendRequest.parse("fla").for_ops(["attention", "ffn"])
