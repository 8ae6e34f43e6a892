# latprof developer entry points.  `make install` then `make run` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Where to find a CPU build of torch on machines without an NVIDIA GPU (empty: pip's defaults and
# PIP_FIND_LINKS).  Point it at PyTorch's CPU wheel index where no local CPU wheel exists.
TORCH_INDEX ?=
TORCH_VERSION ?= 2.13.0
TRITON_VERSION ?= 3.7.1

.PHONY: install run test test-all lint format clean bench wheelhouse gpu-check gpu-check-dry-run

install: $(VENV)/.installed

# --system-site-packages: a machine's own (CUDA) torch and triton stay in use; we install torch
# only where none imports, and then the CPU build unless an NVIDIA GPU is present.
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "torch already present: $$($(PY) -c 'import torch; print(torch.__version__)') (kept)"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PIP) install "torch==$(TORCH_VERSION)"; \
	else \
	  $(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "torch==$(TORCH_VERSION)"; \
	fi
	@$(PY) -c "import triton" 2>/dev/null || $(PIP) install "triton==$(TRITON_VERSION)"
	$(PIP) install -e ".[fla,dev]"
	@# NVML (clock / temperature / throttle readings beside every GPU row) where a GPU is present
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PIP) install -e ".[gpu]"; fi
	@# mamba-ssm's Triton kernels and references, without its CUDA build or heavy extras
	@$(PY) -c "import importlib.util as u; exit(0 if u.find_spec('mamba_ssm') else 1)" 2>/dev/null || \
	  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE $(PIP) install --no-build-isolation --no-deps "mamba-ssm==2.3.2.post1" || \
	  echo "mamba-ssm could not be built; its backend and peer tests will report why they skip"
	touch $@

# The main job: a quick sweep on this device (the CPU when there is no GPU), a look at the LUT,
# and an estimate of a Nemotron-Flash-1B-shaped model from it (measuring the rows it lacks).
# On a machine with an NVIDIA GPU (nvidia-smi works, as for `install`) the GPU smoke spec in graph
# mode with the fast backends instead.
RUN_SPEC := $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; \
  then echo gpu-smoke; else echo quick; fi)
run: install
	$(VENV)/bin/latprof sweep --spec luts/$(RUN_SPEC).yaml --out luts/local-$(RUN_SPEC).csv
	$(VENV)/bin/latprof show luts/local-$(RUN_SPEC).csv --batch 1
	$(VENV)/bin/latprof estimate configs/nemotron-flash-1b.yaml --lut luts/local-$(RUN_SPEC).csv \
	  --measure-missing --prompt 1024 --generate 1000

# Wheels a GPU node without network lacks (docs/gpu-check.md): latprof, fla-core, mamba-ssm
# (its CUDA build skipped: pure Python + Triton), nvidia-ml-py.  Never torch or triton.  <= 64 MiB.
WHEELHOUSE ?= wheelhouse
FLA_VERSION ?= 0.6.0
MAMBA_VERSION ?= 2.3.2.post1
NVML_VERSION ?= 13.615.71
wheelhouse: install
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	$(PIP) wheel --no-deps --no-build-isolation -w $(WHEELHOUSE) .
	$(PIP) download --no-deps --only-binary=:all: -d $(WHEELHOUSE) \
	  "fla-core==$(FLA_VERSION)" "nvidia-ml-py==$(NVML_VERSION)"
	MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE $(PIP) wheel --no-deps --no-build-isolation \
	  -w $(WHEELHOUSE) "mamba-ssm==$(MAMBA_VERSION)"
	$(PY) benchmarks/check_wheelhouse.py $(WHEELHOUSE)

# On the GPU node: install from the wheelhouse (no network, torch / triton kept), then every GPU
# stage under its own budget into gpu-check-out/ (at most 8 files, 8 minutes).
GPU_CHECK_OUT ?= gpu-check-out
gpu-check:
	python3 benchmarks/gpu_check.py --wheelhouse $(WHEELHOUSE) --out $(GPU_CHECK_OUT)

# The same script without a GPU, on tiny shapes (CI): GPU-only stages report "skipped: no GPU".
gpu-check-dry-run: install
	$(PY) benchmarks/gpu_check.py --wheelhouse $(WHEELHOUSE) --out $(GPU_CHECK_OUT) --device cpu

test: install
	$(PY) -m pytest -q

# everything, long tests included (CI runs this)
test-all: install
	$(PY) -m pytest -q -m "slow or not slow"

lint: install
	$(PY) -m ruff check latprof kernels tests benchmarks
	$(PY) -m ruff format --check latprof kernels tests benchmarks

format: install
	$(PY) -m ruff format latprof kernels tests benchmarks
	$(PY) -m ruff check --fix latprof kernels tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info $(WHEELHOUSE) $(GPU_CHECK_OUT)
