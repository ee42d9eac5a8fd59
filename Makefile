# The two set-up commands of the README are `make demo` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest-xdist is not used: tests share a 2-core CI machine and several are multi-threaded already.
PYTEST_ARGS ?=
# e.g. BENCH_ARGS=--quick (smaller inputs) or BENCH_ARGS='normalize train' (only those)
BENCH_ARGS ?=

.PHONY: demo test lint format protos bench bench-gpu build-images push-images clean help

help:
	@echo "make demo    run the whole pipeline locally on the bundled demo voice (tiny random models)"
	@echo "make test    run the test suite"
	@echo "make lint    ruff"
	@echo "make bench   run the CPU benchmarks under bench/ (table + bench/results/*.json)"
	@echo "make bench-gpu  the prepared GPU run (bench/gpu.sh; needs CUDA and a CUDA torch)"

# torch is installed first and pinned: a looser spec would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[pipeline,dev]'
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
	PYTHON=$(PY) bash bench/gpu.sh

IMAGE_REGISTRY ?= ghcr.io/example
IMAGE_TAG ?= latest
build-images:
	$(PYTHON) images/build.py build --registry $(IMAGE_REGISTRY) --tag $(IMAGE_TAG)

push-images:
	$(PYTHON) images/build.py push --registry $(IMAGE_REGISTRY) --tag $(IMAGE_TAG)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
