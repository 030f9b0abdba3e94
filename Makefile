# Two commands for a new user: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test test-fast install lint bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(INSTALLED)

## make run: set up, migrate, print a first admin login, start the web server and the workers.
## make run PORT=8001 HOST=0.0.0.0: another port, or listen on every address.
HOST ?= 127.0.0.1
PORT ?= 8000
run: $(INSTALLED)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensureadmin
	$(PY) manage.py runfactory --host $(HOST) --port $(PORT)

## make test: ruff, mypy, a check that no model change lacks its migration, then the whole test
## suite (SQLite unless DATABASE_URL says otherwise).
test: $(INSTALLED)
	bin/ensure-test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest

## make test-fast: the quick loop while working: ruff, then the tests without browsers or real
## worker processes (`e2e` and `slow` markers), stopping at the first failure.
test-fast: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -x -q -m "not e2e and not slow"

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(INSTALLED)
	$(PY) bench/claims.py
	$(PY) bench/dispatch.py
	$(PY) bench/chatops.py

clean:
	rm -rf $(VENV) node_modules staticfiles
