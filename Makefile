# `make run` starts CrowdPlay on this machine; `make test` runs the test suite.
# Both create .venv and install what they need on a fresh clone.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# A CPU build of torch sits on these machines; naming it exactly keeps pip from fetching CUDA wheels.
TORCH := torch==2.13.0
# The slowest tests of each run are listed at its end, to see where the time goes.
PYTEST_ARGS ?= --durations=15

.PHONY: run lint test test-fast install chromium axe bench clean

run: $(INSTALLED)
	$(PY) -m crowdplay serve

# ruff, and mypy strict for all of crowdplay/ (pyproject.toml's [tool.mypy]; only untyped third-party packages are exempt).
lint: $(INSTALLED)
	$(PY) -m ruff check crowdplay tests
	$(PY) -m mypy crowdplay

# tests/cluster (its own multi-node Ray cluster), tests/study (a deployment running a study) and
# tests/autoscaling (Ray's fake autoscaler with cluster.yaml's node types) and tests/netlab (a
# cluster of network namespaces, docs/netlab.md; needs root) each run in a pytest process of their own.
# The main suite runs two test files at a time, each worker with its own Ray instance, then the
# tests that time something alone (marked serial in tests/conftest.py).
test: lint $(INSTALLED) chromium axe
	$(PY) -m pytest -n 2 --dist loadfile -m "not serial" $(PYTEST_ARGS)
	$(PY) -m pytest -m serial $(PYTEST_ARGS)
	$(PY) -m pytest $(PYTEST_ARGS) tests/cluster
	$(PY) -m pytest $(PYTEST_ARGS) tests/study
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS) tests/autoscaling
	$(PY) -m pytest $(PYTEST_ARGS) tests/netlab

# The Ray-free tier (marked unit in tests/conftest.py): seconds, to run after every change.
test-fast: $(INSTALLED)
	$(PY) -m pytest -m unit -q $(PYTEST_ARGS)

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# Debian's chromium for the browser tests; Playwright never downloads a browser of its own.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# axe-core for the accessibility tests (tests/study/test_accessibility.py), from npm into the venv.
AXE := $(VENV)/axe/node_modules/axe-core/axe.min.js
axe: $(AXE)

$(AXE): | $(INSTALLED)
	@command -v npm >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm >/dev/null; }
	npm install --prefix $(VENV)/axe --no-audit --no-fund --silent axe-core@4.10.3

bench: $(INSTALLED)
	$(PY) -m crowdplay.bench codec --json

clean:
	rm -rf $(VENV) *.egg-info
