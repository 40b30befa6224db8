# The two commands of README.md: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-gpu gpu-check bench serve proto bench-stream clean

# lvis goes in with --no-deps: the LVIS API without the GUI opencv-python it requires
# (pyproject.toml, extra "test").
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[cuda12,serve,bench,test]"
	$(PY) -m pip install --quiet --no-deps "lvis>=0.5.3"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/decal demo --out out/preview.png

# A per-test limit (tests/conftest.py) so that a hung test fails instead of eating CI's time.
test: install
	$(PY) -m pytest -q --per-test-timeout 600 $(PYTEST_ARGS)

# On a machine with a CUDA GPU (NVIDIA driver >= 525.60 for the cuda12 extra).
test-gpu: install
	$(PY) -m pytest -q -m gpu --per-test-timeout 600 $(PYTEST_ARGS)

# The one prepared GPU check (bench/README.md): install, versions, pytest -m gpu, every bench
# mode, OUT/summary.md, inside 8 minutes; its CPU mode without a GPU. No `install`
# prerequisite: the GPU machine reaches no registry. Uses .venv's python when there is one.
OUT ?= out/gpu-check
gpu-check:
	PYTHON=$(if $(wildcard $(PY)),$(PY),$(PYTHON)) bash bench/gpu_check.sh $(OUT)

# CPU half of the throughput benchmark here; every mode on a GPU machine.
bench: install
	$(VENV)/bin/decal bench --out out/bench

# gRPC + FastAPI service on the embedded sample (loopback; see README "Serving batches").
serve: install
	$(VENV)/bin/decal serve --sample --http-port 8080

# Regenerate the checked-in gRPC stubs from proto/decal.proto.
proto: install
	$(PY) -m decal.proto.regenerate

bench-stream: install
	$(PY) bench/stream_bench.py --output-size 256

clean:
	rm -rf $(VENV) out .pytest_cache
