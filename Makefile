# pyhost: the two entry points are `make run` (serve the bundled example) and `make test`
# (build everything and run every test and linter). Both set up what they need on first use.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# The interpreter pyo3 builds against: the base interpreter, never a venv's copy.
export PYO3_PYTHON := $(shell $(PYTHON) -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))')
BIN := target/debug/pyhost
CARGO ?= cargo

.PHONY: run test build venv browser lint rust-test py-test clean bench bench-smoke

run: venv
	$(CARGO) build --release --bin pyhost
	VIRTUAL_ENV=$(abspath $(VENV)) target/release/pyhost serve --config examples/hello/pyhost.toml

test: venv browser build lint rust-test py-test bench-smoke

venv: $(VENV)/.stamp

$(VENV)/.stamp: requirements-dev.txt pyruntime/pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt -e pyruntime
	touch $@

# tests/test_browser.py drives Debian's headless chromium; installed when missing (as root,
# in CI), with the package lists refreshed only if the first try fails.
browser:
	command -v chromium >/dev/null || apt-get install -y --no-install-recommends chromium \
		|| (apt-get update && apt-get install -y --no-install-recommends chromium)

build:
	$(CARGO) build --workspace --all-targets

lint: venv
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check pyruntime tests examples bench scripts
	$(VENV)/bin/ruff format --check pyruntime tests examples bench scripts
	$(VENV)/bin/mypy --strict --config-file pyruntime/pyproject.toml pyruntime/pyhost
	$(VPY) -m pytest --doctest-modules pyruntime/pyhost -q

rust-test:
	$(CARGO) test --workspace

py-test: venv browser build
	PYHOST_BIN=$(abspath $(BIN)) $(VPY) -m pytest tests -q

clean:
	rm -rf $(VENV) target

# Benchmark pyhost against Granian (RSGI, ASGI) and uvicorn; see bench/README.md.
bench:
	$(PYTHON) bench/run.py

# CI check of the benchmark: every server answers every scenario correctly (never judges speed).
bench-smoke:
	$(CARGO) build --bin pyhost
	$(PYTHON) bench/run.py --smoke --bin $(BIN)
