# Two commands on a new machine: `make up` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test test-faults bench lint clean venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/ionveil up

test: $(STAMP)
	$(PY) tests/run_all.py

# Only the fault suite (kills and restarts real servers and workers, about 6 minutes; `make test`
# runs it too).
test-faults: $(STAMP)
	$(PY) tests/run_all.py -m faults

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,embedded,bench]'
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .ionveil .coverage htmlcov
