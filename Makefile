# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv from the pinned requirements when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SEEDS ?= 1
DEMO_OUT ?= demo_results
# VERBOSE=1: the demo prints everything (SpeechBrain's logging and progress
# bars) instead of one bar per stage and <DEMO_OUT>/demo.log.
VERBOSE ?= 0

.PHONY: demo test venv clean-venv

$(STAMP): requirements.txt requirements-nodeps.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m speechbrain_imlkd.demo --output $(DEMO_OUT) --seeds $(SEEDS)$(if $(filter-out 0,$(VERBOSE)), --verbose)

test: $(STAMP)
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
