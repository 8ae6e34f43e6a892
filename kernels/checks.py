"""Host-side argument checks shared by the kernel modules' public functions.

Each public function validates its arguments before launching, so a bad call raises ValueError
with a readable message instead of failing (or silently misbehaving) inside a kernel.
"""

from __future__ import annotations

import torch


def require(ok: bool, message: str) -> None:
    """ValueError(message) unless `ok`."""
    if not ok:
        raise ValueError(message)


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """ValueError unless every tensor given (None ones are skipped) is on one device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    require(
        len(set(devices.values())) == 1,
        "all tensors must be on one device, got "
        + ", ".join(f"{k}: {v}" for k, v in devices.items()),
    )
