# The two commands a newcomer runs (as root, on Debian/Ubuntu): `make demo` and `make test`.
# Each installs what is missing first: Debian packages, then a virtualenv with shoal and its test extras.

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
SHOAL := $(VENV)/bin/shoal

# Debian packages the cluster and the tests use (command -> package is in tools/deps.sh).
.PHONY: demo test deps venv lint unit e2e bench down clean

deps:
	@bash tools/deps.sh

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: deps $(VENV)/.installed

demo: venv
	@$(PY) demo/walkthrough.py

lint: venv
	$(VENV)/bin/ruff check shoal tests benchmarks demo
	$(VENV)/bin/ruff format --check shoal tests benchmarks demo

# three groups side by side (tools/test.sh says which); `make test ARGS=-x` passes pytest options to each
test: venv lint
	@bash tools/test.sh $(ARGS)

unit: venv
	$(VENV)/bin/pytest -q tests/unit

e2e: venv
	$(VENV)/bin/pytest -q -rs tests/e2e

bench: venv
	$(PY) benchmarks/dev_up.py
	$(PY) benchmarks/registry_kv.py
	$(PY) benchmarks/registry_watch.py
	$(PY) benchmarks/registry_acl.py
	$(PY) benchmarks/agent_facts.py
	$(PY) benchmarks/scheduler.py
	$(PY) benchmarks/manager.py
	$(PY) benchmarks/datasets.py
	$(PY) benchmarks/safety.py
	$(PY) benchmarks/security.py
	$(PY) benchmarks/etcd_ratio.py
	$(PY) benchmarks/ha.py

down:
	@$(SHOAL) dev down

clean: down
	rm -rf $(VENV) build *.egg-info
