# Avis: the two commands are `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export AVIS_CACHE ?= $(HOME)/.cache/avis
UV_VERSION := 0.13.8
UV := $(AVIS_CACHE)/uv-$(UV_VERSION)/bin/uv
PY := .venv/bin/python
INFRA := deploy/local/infra.sh

# `make test` runs its own broker and store on ports of its own, so it can run beside `make run`.
# The ports and state folder can be moved (e.g. `make test TEST_PORT_PREFIX=2` for 29092...), so two
# checkouts can test side by side. Prefixes 1 and 2 keep the broker and store below the kernel's
# ephemeral ports (32768 and up); with 3 to 5, a broker restarted by the outage tests or the
# fault run can find its port taken by a client's reconnection to it (a TCP self-connect).
TEST_PORT_PREFIX ?= 1
TEST_STATE ?= $(CURDIR)/.local/test
TEST_ENV := AVIS_STATE_DIR=$(TEST_STATE) AVIS_KAFKA_PORT=$(TEST_PORT_PREFIX)9092 \
	AVIS_KAFKA_CONTROLLER_PORT=$(TEST_PORT_PREFIX)9093 AVIS_MONGO_PORT=$(TEST_PORT_PREFIX)7117 \
	AVIS_SMTP_PORT=$(TEST_PORT_PREFIX)1025 AVIS_KAFKA_BOOTSTRAP=127.0.0.1:$(TEST_PORT_PREFIX)9092 \
	AVIS_MONGO_URL=mongodb://127.0.0.1:$(TEST_PORT_PREFIX)7117 \
	AVIS_SMTP_URL=smtp://127.0.0.1:$(TEST_PORT_PREFIX)1025 AVIS_PYTHON=$(CURDIR)/$(PY) \
	AVIS_OIDC_PORT=$(TEST_PORT_PREFIX)4444 AVIS_OIDC_ADMIN_PORT=$(TEST_PORT_PREFIX)4445 \
	AVIS_OIDC_HOOK_PORT=$(TEST_PORT_PREFIX)8010 AVIS_KMS_PORT=$(TEST_PORT_PREFIX)5696 \
	AVIS_KRATOS_PORT=$(TEST_PORT_PREFIX)4433 AVIS_KRATOS_ADMIN_PORT=$(TEST_PORT_PREFIX)4434

.PHONY: help install install-infra install-test run test test-lane test-fast lint infra-start infra-stop infra-status bench bench-store chaos asyncapi release-schemas clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(AVIS_CACHE)/uv-$(UV_VERSION)
	$(AVIS_CACHE)/uv-$(UV_VERSION)/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: $(UV) uv.lock pyproject.toml shared/pyproject.toml $(wildcard services/*/pyproject.toml)
	$(UV) sync --locked --python python3
	@touch $@

# The Python environment (uv, network-bound) and the rest (infra.sh install: Maven's jars and the
# Go builds, CPU-bound) side by side: neither needs the other.
install:  ## what make run needs: uv, the Python environment, Kafka's and Zipkin's jars, FerretDB, the metrics store, Hydra, Kratos (once)
	@$(MAKE) --no-print-directory -j2 .venv/.synced install-infra

install-infra:
	$(INFRA) install

# What only the suite needs, kept out of `make run`'s first start: poppler and chromium (system
# packages), the Kubernetes checks' tools and the alert rules' test tool (vmalert-tool), side by side.
install-test: install  ## what make test adds: poppler, chromium, the k8s checks' tools, vmalert-tool (once)
	@deploy/k8s/tools.sh > /dev/null & tools=$$!; deploy/metrics/install.sh > /dev/null & vm=$$!; \
	deploy/local/system-packages.sh; pkgs=$$?; wait $$tools; tools=$$?; wait $$vm; vm=$$?; \
	exit $$((pkgs || tools || vm))

run: install  ## start Kafka, FerretDB, the SMTP sink, Zipkin and the four services; says "ready"; Ctrl-C stops all
	@AVIS_PYTHON=$(CURDIR)/$(PY) deploy/local/run.sh

# Without PYTEST_ARGS, the suite runs in two lanes side by side (deploy/local/lanes.sh), the second
# on TEST_PORT_PREFIX + 1; TEST_LANES=1 runs it in one.
TEST_LANES ?= 2
test: install-test  ## the whole suite against its own broker and store (PYTEST_ARGS: a part of it)
	@if [ -z "$(strip $(PYTEST_ARGS))" ] && [ "$(TEST_LANES)" = 2 ]; then \
		deploy/local/lanes.sh "$(MAKE)" "$(TEST_PORT_PREFIX)" "$(TEST_STATE)"; \
	else \
		$(TEST_ENV) deploy/local/test.sh $(PYTEST_ARGS); \
	fi

test-lane:  # one lane of make test (deploy/local/lanes.sh), the installs already done
	@$(TEST_ENV) deploy/local/test.sh $(PYTEST_ARGS)

test-fast: lint  ## lint and the unit tests: no broker, no store, a few seconds
	$(PY) -m pytest tests/unit -q

lint: .venv/.synced  ## ruff and mypy
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

asyncapi: .venv/.synced  ## regenerate docs/asyncapi.json and docs/schemas from the event models
	$(PY) -m avis.shared.events --write docs

release-schemas: .venv/.synced  ## release the event schemas to contracts/released (refused if a reader would break)
	$(PY) -m avis.shared.released --release contracts/released

bench: install-test  ## benchmarks against the test stack (<= 25 min); BENCH_ARGS=--quick for a first look
	@$(TEST_ENV) AVIS_KAFKA_BENCH_PLAINTEXT_PORT=$(TEST_PORT_PREFIX)9095 deploy/local/test.sh bench $(BENCH_ARGS)

bench-store: install  ## cost as stored data grows (1k/10k/50k cases); BENCH_ARGS=--quick for a first look
	@$(TEST_ENV) deploy/local/test.sh bench-store $(BENCH_ARGS)

CHAOS_CASES ?= 300
CHAOS_SEED ?= 1
CHAOS_COPIES ?= 2
chaos: install  ## the fault run at full size (CHAOS_CASES, CHAOS_SEED, CHAOS_COPIES of each service); < 30 min
	@$(TEST_ENV) CHAOS_CASES=$(CHAOS_CASES) CHAOS_SEED=$(CHAOS_SEED) CHAOS_COPIES=$(CHAOS_COPIES) \
		deploy/local/test.sh chaos

infra-start: install  ## start only Kafka, FerretDB and the SMTP sink (ports of `make run`)
	AVIS_PYTHON=$(CURDIR)/$(PY) $(INFRA) start && $(INFRA) wait && \
	set -a && . "$${AVIS_STATE_DIR:-.local/run}/kafka/users.env" && set +a && \
	export AVIS_KAFKA_BOOTSTRAP=$${AVIS_KAFKA_BOOTSTRAP:-127.0.0.1:$${AVIS_KAFKA_PORT:-9092}} && \
	$(PY) -m avis.shared.topics && $(PY) deploy/kafka/acls.py

infra-stop:  ## stop what infra-start started
	$(INFRA) stop

infra-status:  ## which local infrastructure is up (finds the running `make run`, whatever its AVIS_STATE_DIR)
	@$(INFRA) status

clean:  ## remove the local state (data of the local stack); caches stay
	-$(INFRA) stop
	rm -rf .local .venv
