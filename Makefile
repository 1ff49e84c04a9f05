# Two commands do all the set-up on a fresh clone:
#   make demo   the whole flow on the bundled simulators, checked end to end
#   make test   ruff, mypy and the tests (installs the test peers when running as root)

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit peers bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edge-gateway demo

peers:
	./tests/peers/install.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway drivers simulators tests
	$(VENV)/bin/ruff format --check gateway drivers simulators tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q -m "not integration and not slow"

test: $(STAMP) peers lint typecheck
	$(VENV)/bin/pytest -q -ra

bench: $(STAMP)
	$(VENV)/bin/edge-gateway bench pipeline

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
