"""Settings, resolved in one place for every command: device, dtype, mode, batch, context, backends.

`Settings.resolve` turns what a user typed (`--device auto --batch 1,8,32 --backend
torch,attention=sdpa`) into checked values.  Two flavours:

- `measure=True` (sweep, compare, decode): the device is resolved now (auto = cuda when torch
  sees one, else cpu), dtype and mode default from it (bf16 and graph on cuda; float32 and eager
  on cpu, where bf16 matmuls are often emulated and ~10x slower).
- `measure=False` (estimate): a value left out means "the LUT's", so nothing is resolved against
  this machine and torch is never imported; `--device` may also be a device name.

Nothing here imports torch at import time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from latprof import inputs
from latprof.errors import InputError
from latprof.registry import OPERATOR_NAMES, operator
from latprof.specs import canonical_dtype

DEVICES = ("cpu", "cuda")
MODES = ("graph", "eager")


# ---- numbers and names from the command line -----------------------------------------------
#: the largest value each list flag takes (`latprof.inputs` documents the ceilings)
CEILINGS = {
    "batch": inputs.MAX_BATCH,
    "context": inputs.MAX_CONTEXT,
    "prompt": inputs.MAX_CONTEXT,
    "generate": inputs.MAX_CONTEXT,
    "depths": inputs.MAX_LAYERS,
}


def parse_counts(value: str | int | Iterable[int], name: str, minimum: int = 1) -> tuple[int, ...]:
    """`"1,8,32"` -> (1, 8, 32); `k` suffixes allowed (`32k` = 32768); ints pass through.
    Every value must be an integer >= `minimum` and at most the ceiling of `name` (`CEILINGS`;
    `inputs.MAX_SIZE` for any other list, widths among them).  Spec files' lists go through
    here too, so a file and a flag are checked alike."""
    maximum = CEILINGS.get(name, inputs.MAX_SIZE)
    if isinstance(value, str) and len(value) > 10_000:
        raise InputError(f"--{name}: {len(value):,} characters is not a list of counts")
    if isinstance(value, str):
        items: list[object] = [item.strip().lower() for item in value.split(",") if item.strip()]
    elif isinstance(value, int):
        items = [value]
    else:
        items = list(value)
    out = []
    for item in items:
        if isinstance(item, str):
            digits = item[:-1] if item.endswith("k") else item
            try:
                if len(digits) > inputs.MAX_INT_DIGITS:
                    raise ValueError
                number = int(digits) * 1024 if item.endswith("k") else int(digits)
            except ValueError:
                raise InputError(
                    f"--{name}: {inputs.quote(item)} is not an integer (expected e.g. 1,8,32 or 8k)"
                ) from None
        elif isinstance(item, int) and not isinstance(item, bool):
            number = item
        else:
            raise InputError(f"--{name}: {inputs.quote(item)} is not an integer")
        if number < minimum:
            positive = " (a positive integer)" if minimum == 1 else ""
            raise InputError(
                f"--{name}: must be >= {minimum}{positive}, got {inputs.quote(number)}"
            )
        if number > maximum:
            raise InputError(
                f"--{name}: {inputs.quote(number)} is over latprof's limit of {maximum:,}"
            )
        out.append(number)
    if not out:
        raise InputError(f"--{name}: give at least one value")
    return tuple(out)


def parse_count(value: str | int, name: str, minimum: int = 1) -> int:
    """Exactly one integer, parsed as `parse_counts` parses each of a list."""
    if isinstance(value, str) and "," in value:
        raise InputError(f"--{name}: {value!r} is not one integer; this command takes one value")
    return parse_counts(value, name, minimum)[0]


def parse_names(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """`"attention, ffn"` -> ("attention", "ffn")."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(item.strip() for item in items if item.strip())


# ---- backends --------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendRequest:
    """The backends asked for: names for every operator that has them (`general`), and
    operator-specific lists (`per_op`, from `op=name` items).  Empty: not said."""

    general: tuple[str, ...] = ()
    per_op: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, value: str | Iterable[str] | dict[str, str] | BackendRequest | None):
        """`"torch,attention=sdpa"`, a list of such items, or {op: name}."""
        if isinstance(value, BackendRequest):
            return value
        if isinstance(value, dict):
            items = [f"{k}={v}" for k, v in value.items()]
        else:
            items = list(parse_names(value))
        general: list[str] = []
        per_op: dict[str, list[str]] = {}
        for item in items:
            if "=" not in item:
                general.append(item)
                continue
            op, name = (part.strip() for part in item.split("=", 1))
            if op not in OPERATOR_NAMES:
                raise InputError(
                    f"--backend {item}: unknown operator {op!r}; valid: {', '.join(OPERATOR_NAMES)}"
                )
            if not name:
                raise InputError(f"--backend {item}: give a backend name after '='")
            per_op.setdefault(op, []).append(name)
        return cls(tuple(general), tuple((op, tuple(names)) for op, names in per_op.items()))

    @property
    def per_op_dict(self) -> dict[str, tuple[str, ...]]:
        return dict(self.per_op)

    def single(self) -> tuple[str | None, dict[str, str]]:
        """(one name for every operator, {op: one name}) for commands that use one backend per
        operator (estimate, compare); two names where one is needed is an error."""
        if len(self.general) > 1:
            raise InputError(
                f"--backend: two backends for every operator ({', '.join(self.general)}); give "
                "one name, or op=name pairs"
            )
        per_op = {}
        for op, names in self.per_op:
            if len(names) > 1:
                raise InputError(f"--backend: two backends for {op} ({', '.join(names)}); give one")
            per_op[op] = names[0]
        return (self.general[0] if self.general else None), per_op

    def for_ops(self, ops: Iterable[str]) -> dict[str, str]:
        """One backend per operator for a whole model: its `op=name`, else the general name where
        the operator has that backend (the registry says), else "torch"."""
        default, per_op = self.single()
        out = {}
        for op in dict.fromkeys(ops):
            if op in per_op:
                out[op] = per_op[op]
            elif default and default in operator(op).backend_names:
                out[op] = default
            else:
                out[op] = "torch"
        if default and default not in out.values():
            raise InputError(f"--backend {default}: none of the model's operators has it")
        return out

    def __str__(self) -> str:
        parts = [*self.general, *(f"{op}={n}" for op, names in self.per_op for n in names)]
        return ",".join(parts)


# ---- device, dtype, mode ---------------------------------------------------------------------
def default_dtype(device: str) -> str:
    """bf16 on GPUs; float32 on CPUs, where bf16 matmuls are often emulated and ~10x slower."""
    return "bfloat16" if device == "cuda" else "float32"


def resolve_device(choice: str) -> str:
    """'auto' -> 'cuda' when torch sees a CUDA device, else 'cpu'; 'cuda' without one is an
    error saying what torch sees.  Imports torch."""
    choice = choice.strip().lower()
    if choice not in ("auto", *DEVICES):
        raise InputError(f"unknown device {choice!r}; valid: auto, cpu, cuda")
    if choice == "cpu":
        return "cpu"
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise InputError(
            "--device cuda was asked for, but torch sees no CUDA device "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
            "use --device cpu or auto"
        )
    return "cuda"


def resolve_mode(mode: str | None, device: str) -> str:
    """graph (CUDA graphs) or eager; default graph on cuda, eager on cpu."""
    if mode is None:
        return "graph" if device == "cuda" else "eager"
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; valid: graph, eager")
    if device == "cpu" and mode == "graph":
        raise InputError(
            "--mode graph needs CUDA graphs, which exist only on cuda; use eager on cpu"
        )
    return mode


@dataclass(frozen=True)
class Settings:
    """Where and how to measure or estimate.  `device`, `dtype`, `mode` None: the LUT's
    (estimate only); `dtype` is canonical (float32, bfloat16, float16)."""

    device: str | None
    dtype: str | None
    mode: str | None
    batch: tuple[int, ...] = (1,)
    context: tuple[int, ...] = (1024,)
    backends: BackendRequest = field(default_factory=BackendRequest)

    @classmethod
    def resolve(
        cls,
        *,
        device: str = "auto",
        dtype: str | None = None,
        mode: str | None = None,
        batch: str | int | Sequence[int] = (1,),
        context: str | int | Sequence[int] = (1024,),
        backend: str | Iterable[str] | dict[str, str] | BackendRequest | None = None,
        measure: bool = True,
        one_batch: bool = False,
    ) -> Settings:
        """The one place flags become settings (see the module docstring).  `one_batch`: the
        command takes one batch size (estimate, compare); a list is refused."""
        if one_batch:
            batches: tuple[int, ...] = (parse_count(batch, "batch"),)
        else:
            batches = parse_counts(batch, "batch")
        contexts = parse_counts(context, "context")
        backends = BackendRequest.parse(backend)
        if measure:
            return cls.for_device(
                resolve_device(device),
                dtype=dtype,
                mode=mode,
                batch=batches,
                context=contexts,
                backend=backends,
            )
        text = (device or "auto").strip()
        dev = (
            None if text.lower() == "auto" else (text.lower() if text.lower() in DEVICES else text)
        )
        if mode is not None and mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; valid: graph, eager")
        return cls(
            dev, canonical_dtype(dtype) if dtype else None, mode, batches, contexts, backends
        )

    @classmethod
    def for_device(
        cls,
        device: str,
        *,
        dtype: str | None = None,
        mode: str | None = None,
        batch: str | int | Sequence[int] = (1,),
        context: str | int | Sequence[int] = (1024,),
        backend: str | Iterable[str] | dict[str, str] | BackendRequest | None = None,
    ) -> Settings:
        """Settings for measuring on `device`, already resolved (cpu or cuda): dtype and mode
        default from it.  `resolve(measure=True)` resolves the device, then calls this."""
        if device not in DEVICES:
            raise InputError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
        return cls(
            device,
            canonical_dtype(dtype or default_dtype(device)),
            resolve_mode(mode, device),
            parse_counts(batch, "batch"),
            parse_counts(context, "context"),
            BackendRequest.parse(backend),
        )

    @property
    def batch_one(self) -> int:
        """The batch of a command that takes one (resolved with `one_batch=True`)."""
        if len(self.batch) != 1:
            raise InputError(f"--batch takes one value here, got {len(self.batch)}")
        return self.batch[0]
