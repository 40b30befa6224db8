# The two commands of README.md: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-gpu clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[serve,test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/decal demo --out out/preview.png

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# On a machine with a CUDA GPU (see ../shared/gpu/README.md for the lent GPU machine).
test-gpu: install
	$(PY) -m pytest -q -m gpu

clean:
	rm -rf $(VENV) out .pytest_cache
