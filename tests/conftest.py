"""Test set-up.  Without a GPU, Triton kernels (ours, fla's, mamba-ssm's) run under Triton's
interpreter: TRITON_INTERPRET=1 must be set before triton is first imported, so it is set here,
before any test module imports anything."""

from __future__ import annotations

import os
import shutil
import subprocess


def _has_nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


HAS_GPU = _has_nvidia_gpu()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def device():
    """The device kernel and backend tests run on: cuda where present, else cpu (interpreter)."""
    return "cuda" if HAS_GPU else "cpu"
