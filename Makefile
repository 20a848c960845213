# Set-up is idempotent: the virtual environment in .venv is created once and reused.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make test-compat`: the oldest supported Airflow (.ci/compat-requirements.txt) in its own venv, also
# created once and reused, with every other package resolved as it was the day after that Airflow's
# release (a stand-in for Airflow's constraints file, which is not on a package registry).
COMPAT_VENV := .venv-compat
COMPAT_BIN := $(COMPAT_VENV)/bin
COMPAT_STAMP := $(COMPAT_VENV)/.installed
COMPAT_AS_OF := 2025-10-27

.PHONY: install browser test test-compat lint demo bench clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv

$(STAMP): pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The browser tests (gallery, review form) drive Debian's Chromium through the `playwright` package (dev
# extra, which downloads no browser of its own). Installed when missing and this runs as root with apt-get;
# otherwise those tests are skipped and say why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "make browser: no chromium (apt-get install chromium as root): the browser tests will be skipped"

test: $(STAMP) browser
	$(BIN)/pytest -p no:cacheprovider

$(COMPAT_BIN)/python: | $(BIN)/uv
	$(BIN)/uv venv --quiet --python $(PYTHON) $(COMPAT_VENV)

$(COMPAT_STAMP): pyproject.toml .ci/compat-requirements.txt | $(COMPAT_BIN)/python
	$(BIN)/uv pip install --python $(COMPAT_BIN)/python --quiet --exclude-newer $(COMPAT_AS_OF) \
		--exclude-newer-package apache-airflow-providers-common-compat=false \
		-r .ci/compat-requirements.txt -e ".[s3,testing]"
	touch $(COMPAT_STAMP)

test-compat: $(COMPAT_STAMP)
	XAI_TEST_COMPAT=1 $(COMPAT_BIN)/pytest -p no:cacheprovider tests/compat

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python example_dags/run_demo.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(COMPAT_VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
