"""Check a wheelhouse made by `make wheelhouse`: the wheels a GPU node needs are there, none is
torch or triton (installing them would replace the node's CUDA build), all fit in 64 MiB (what the
device tool carries).  Exit 1 with the reason otherwise.

    python benchmarks/check_wheelhouse.py wheelhouse
"""

from __future__ import annotations

import sys
from pathlib import Path

REQUIRED = ("latprof", "fla_core", "mamba_ssm", "nvidia_ml_py")
FORBIDDEN = ("torch", "triton")
LIMIT_BYTES = 64 * 1024**2


def problems(folder: Path) -> list[str]:
    wheels = {w.name.split("-")[0].lower(): w for w in folder.glob("*.whl")}
    found = []
    found += [f"missing {name}" for name in REQUIRED if name not in wheels]
    found += [f"holds {name} (never installed)" for name in FORBIDDEN if name in wheels]
    total = sum(w.stat().st_size for w in wheels.values())
    if total > LIMIT_BYTES:
        found.append(f"{total / 1024**2:.1f} MiB > 64 MiB")
    return found


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "wheelhouse")
    found = problems(folder)
    total = sum(w.stat().st_size for w in folder.glob("*.whl")) / 1024**2
    for w in sorted(folder.glob("*.whl")):
        print(f"{w.stat().st_size / 1024:9.0f} KiB  {w.name}")
    print(f"{total:.1f} MiB in {folder}" + ("" if not found else ": " + "; ".join(found)))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
