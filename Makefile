# Two commands on a fresh machine: `make run` and `make test`. Both create the
# virtual environment (Python 3.10) and install the pinned lock file first.

VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Extra arguments: `make run ARGS="--data my.csv --label y"`,
# `make test PYTEST_ARGS="-k config"`.
ARGS ?=
PYTEST_ARGS ?=

# Python 3.10 (TFX 1.16 supports nothing newer): python3.10 on PATH if it
# runs, else the newest pyenv 3.10.
PYTHON310 := $(shell \
  if python3.10 -c '' >/dev/null 2>&1; then command -v python3.10; \
  else ls -d "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.10*/bin/python 2>/dev/null | sort -V | tail -n 1; fi)

.PHONY: run test test-fast lock clean-output

$(INSTALLED): setup.py pyproject.toml requirements/lock.txt
	@test -n "$(PYTHON310)" || { echo 'error: Python 3.10 not found (python3.10 on PATH or pyenv 3.10.x)' >&2; exit 2; }
	@test -x $(BIN)/python || $(PYTHON310) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

run: $(INSTALLED)
	$(BIN)/tfx-e2e run $(ARGS)

# The whole suite (what CI runs).
test: $(INSTALLED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: everything but the end-to-end tests (marker `e2e`).
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m 'not e2e' $(PYTEST_ARGS)

# Re-resolve the pinned environment after changing setup.py's requirements.
lock:
	rm -rf .lock-venv && $(PYTHON310) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test]'
	.lock-venv/bin/python -m pip freeze --exclude-editable > requirements/lock.txt
	rm -rf .lock-venv

clean-output:
	rm -rf output
