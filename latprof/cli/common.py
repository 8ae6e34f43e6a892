"""Shared CLI pieces: option types, list parsing, error handling, output."""

from __future__ import annotations

import functools
import json
import sys
import textwrap
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer

from latprof.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ModeChoice(str, Enum):
    graph = "graph"
    eager = "eager"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DeviceOpt = Annotated[
    DeviceChoice, typer.Option("--device", help="auto = cuda when available, else cpu.")
]
DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", help="float32 | bf16 | fp16 (default: bf16 on cuda, float32 on cpu)."),
]


def parse_int_list(text: str, name: str) -> list[int]:
    """`"1,8,32"` -> [1, 8, 32]; also accepts k suffixes (`32k` = 32768)."""
    values = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        try:
            value = int(item[:-1]) * 1024 if item.endswith("k") else int(item)
        except ValueError:
            raise InputError(
                f"--{name}: {item!r} is not an integer (expected e.g. 1,8,32)"
            ) from None
        if value <= 0:
            raise InputError(f"--{name}: values must be positive, got {value}")
        values.append(value)
    if not values:
        raise InputError(f"--{name}: give at least one value")
    return values


def parse_str_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def fail(message: str, code: int = 2) -> None:
    """Print one paragraph to stderr and exit."""
    wrapped = textwrap.fill(" ".join(message.split()), width=100)
    print(f"latprof: error: {wrapped}", file=sys.stderr)
    raise typer.Exit(code)


def handles_input_errors(func: F) -> F:
    """Turn InputError into a one-paragraph message and exit code 2 (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            fail(str(exc), 2)

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
