# The two set-up commands of the README are `make demo` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest-xdist is not used: tests share a 2-core CI machine and several are multi-threaded already.
PYTEST_ARGS ?=
# e.g. BENCH_ARGS=--quick (smaller inputs) or BENCH_ARGS='normalize train' (only those)
BENCH_ARGS ?=

.PHONY: demo test lint format protos bench bench-gpu build-images push-images image-smoke locks venv clean help

help:
	@echo "make demo    run the whole pipeline locally on the bundled demo voice (tiny random models)"
	@echo "make test    run the test suite"
	@echo "make lint    ruff"
	@echo "make bench   run the CPU benchmarks under bench/ (table + bench/results/*.json)"
	@echo "make bench-gpu  the prepared GPU run (bench/gpu.sh; needs CUDA and a CUDA torch)"
	@echo "make build-images [ENGINE=docker|podman] [IMAGES=cpu|gpu|all]   build the step images"
	@echo "make push-images  push them and record the registry's digests in images/images.json"
	@echo "make image-smoke  build the CPU image and run the pipeline's checks inside it"
	@echo "make locks   regenerate requirements/*.lock from pyproject.toml"

# torch first and pinned, the CPU build unless this machine has an NVIDIA GPU: PyTorch's CPU wheel index is
# added as an extra index (2.13.0+cpu, 192 MB, sorts above PyPI's 2.13.0, the CUDA 13 build: 2.7 GB of
# wheels). TORCH_INDEX_URL overrides it (a mirror, or https://download.pytorch.org/whl/cu126); empty means
# PyPI only. An index that does not answer within 5 s is left out with a note (pip then takes torch from the
# ordinary index or from wheels on disk, as on machines that serve the CPU wheel there).
# On the images' platform (CPython 3.11, x86-64 Linux) the venv is held to requirements/dev.lock, so the tests
# run with the versions the images install (requirements/cpu.lock and gpu.lock are resolved under it).
HAS_NVIDIA_GPU := $(shell { command -v nvidia-smi || test -e /proc/driver/nvidia/version; } >/dev/null 2>&1 && echo yes)
TORCH_INDEX_URL ?= $(if $(HAS_NVIDIA_GPU),,https://download.pytorch.org/whl/cpu)
TORCH_INDEX_REACHABLE = $(shell $(PYTHON) images/index_reachable.py '$(TORCH_INDEX_URL)' torch)
LOCK_PLATFORM = $(shell $(PYTHON) -c 'import sys, platform; print(sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64")')
$(STAMP): pyproject.toml requirements/dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX_URL),$(if $(TORCH_INDEX_REACHABLE),--extra-index-url $(TORCH_INDEX_URL)))
	grep -v '^torch==' requirements/dev.lock > $(VENV)/constraints.txt
	$(PY) -m pip install --quiet $(if $(filter True,$(LOCK_PLATFORM)),-c $(VENV)/constraints.txt) -e '.[pipeline,dev]'
	$(PY) -c 'import torch; print("torch", torch.__version__, "(CUDA " + str(torch.version.cuda) + ")")'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Regenerate the protobuf module from its schema (the generated file is committed).
protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -Ifish_speech/dataset --python_out=fish_speech/dataset fish_speech/dataset/text_data.proto

bench: $(STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)

bench-gpu: $(STAMP)
	PYTHON=$(PY) bash bench/gpu.sh $(BENCH_ARGS)

# Images (README > Kubeflow pipeline > Images). ENGINE: docker or podman (default: whichever answers);
# IMAGES: cpu, gpu or all; BUILD_ARGS: e.g. '--build-arg BASE_IMAGE=... --build-arg PIP_INDEX_URL=...'.
IMAGE_REGISTRY ?= ghcr.io/example
IMAGE_TAG ?= latest
ENGINE ?=
IMAGES ?= all
BUILD_ARGS ?=
IMAGE_FLAGS = --registry $(IMAGE_REGISTRY) --tag $(IMAGE_TAG) $(if $(ENGINE),--engine $(ENGINE)) \
	$(if $(filter-out all,$(IMAGES)),$(foreach i,$(IMAGES),--only $(i)))
build-images:
	$(PYTHON) images/build.py build $(IMAGE_FLAGS) $(BUILD_ARGS)

push-images:
	$(PYTHON) images/build.py push $(IMAGE_FLAGS)

# Build the CPU image and run the pipeline's checks inside it (images/smoke.sh; needs podman or docker).
# AIRGAP=1: from the debootstrapped base and the local wheelhouse (images/airgap.sh base wheelhouse first).
AIRGAP ?=
image-smoke:
	$(if $(AIRGAP),ENGINE=$(or $(ENGINE),podman) bash images/airgap.sh smoke,ENGINE=$(ENGINE) BUILD_ARGS='$(BUILD_ARGS)' bash images/smoke.sh)

# The images' exact, hashed dependencies, resolved from pyproject.toml (requirements/lock.py; needs PyPI).
# LOCK_ARGS: e.g. '--torch-index-url https://download.pytorch.org/whl/cpu' or '--find-links /opt/wheels'.
LOCK_ARGS ?=
locks: $(STAMP)
	$(PY) requirements/lock.py $(LOCK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
