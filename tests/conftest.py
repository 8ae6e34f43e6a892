"""Test set-up.  Without a GPU, Triton kernels (ours, fla's, mamba-ssm's) run under Triton's
interpreter: TRITON_INTERPRET=1 must be set before triton is first imported, so it is set here,
before any test module imports anything.

Fixtures shared by the operator and kernel tests are defined here, none autouse: a module opts in
with `pytestmark = pytest.mark.usefixtures(...)` or by naming one as an argument.  Helper
functions shared by those tests live in op_checks.py (tests/ is on sys.path: pytest's default
"prepend" import mode inserts this folder, which has no __init__.py)."""

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
import torch  # noqa: E402


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


@pytest.fixture
def no_grad():
    """Decode runs without autograd (the timer uses inference mode)."""
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread avoids contention on a busy shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def nan_poison():
    """Fill every torch.empty / new_empty with NaN (deterministic mode fills uninitialised memory),
    so an output a kernel forgets to write fails; covers allocations inside third-party code."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture
def poison_empty(monkeypatch):
    """torch.empty returns NaN-filled floats, so an output element a kernel forgets is NaN."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", empty)
