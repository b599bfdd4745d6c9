# Headroom developer entry points. `make run` and `make test` do all set-up on
# a fresh machine; every other target is listed by `make help`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

HEADROOM_CACHE ?= $(HOME)/.cache/headroom
CLUSTER_DIR    ?= $(HEADROOM_CACHE)/cluster
VENV           ?= .venv
PY             := $(VENV)/bin/python
export HEADROOM_CACHE CLUSTER_DIR

# When the user exported KUBECONFIG, every target uses that cluster and the
# local control plane is not started. Otherwise we start (or reuse) our own.
ifeq ($(origin KUBECONFIG),environment)
USER_CLUSTER := 1
CLUSTER_KUBECONFIG := $(KUBECONFIG)
else
USER_CLUSTER :=
CLUSTER_KUBECONFIG := $(CLUSTER_DIR)/kubeconfig
endif

.PHONY: help
help: ## list targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

.PHONY: deps
deps: ## install the Debian packages the tests and the control plane use (apt, once)
	@hack/install-deps.sh packages

.PHONY: venv
venv: $(VENV)/.installed ## create the Python venv with Headroom and dev tools

.PHONY: binaries
binaries: ## build the control-plane binaries into $(HEADROOM_CACHE) (cached)
	hack/build-binaries.sh >/dev/null

.PHONY: versitygw
versitygw: ## build versitygw (the builtin object storage's S3 server, used by the conformance tests) into $(HEADROOM_CACHE) (cached)
	hack/build-versitygw.sh >/dev/null

.PHONY: exporters
exporters: ## build pgbouncer_exporter, redis_exporter and postgres_exporter (the versions the pods run; the alert tests scrape them) into $(HEADROOM_CACHE) (cached)
	hack/build-exporters.sh >/dev/null

.PHONY: gitopscheck
gitopscheck: ## build gitopscheck (kstatus, Argo CD's Lua runtime, Flux's CEL: how GitOps tools judge a profile) into $(HEADROOM_CACHE) (cached)
	hack/build-gitopscheck.sh >/dev/null

.PHONY: pgbouncer
pgbouncer: ## PgBouncer of the default image's release (1.26.1) from Debian's archive into $(HEADROOM_CACHE): built from sid's source package, or sid's binary package on sid's own loader and libraries when the archive does not serve the source (cached; the conformance and client tests run it)
	hack/build-pgbouncer.sh >/dev/null

.PHONY: node-clients
node-clients: ## npm ci the client tests' Node packages (tests/clients/node/package-lock.json) into $(HEADROOM_CACHE) and generate the Prisma client (cached)
	hack/install-node-clients.sh >/dev/null

.PHONY: cluster
cluster: $(if $(USER_CLUSTER),,deps) ## start (or reuse) the local control plane: etcd, apiserver, controller-manager, scheduler, kwok
ifeq ($(USER_CLUSTER),1)
	@echo "KUBECONFIG is set ($(KUBECONFIG)): using that cluster, not starting one"
else
	hack/cluster.sh up
endif

.PHONY: cluster-down
cluster-down: ## stop the local control plane (and a `make run` operator) and delete its state
	@pid=$(HEADROOM_CACHE)/run/operator.pid; if [ -f $$pid ]; then kill $$(cat $$pid) 2>/dev/null || true; rm -f $$pid; fi
	hack/cluster.sh down

.PHONY: kubeconfig
kubeconfig: ## print the path of the kubeconfig that targets use
	@echo $(CLUSTER_KUBECONFIG)

.PHONY: cluster-kind
cluster-kind: ## (needs Docker) create a kind cluster instead; then export KUBECONFIG
	kind create cluster --name headroom --kubeconfig $(HEADROOM_CACHE)/kind-kubeconfig
	@echo "export KUBECONFIG=$(HEADROOM_CACHE)/kind-kubeconfig"

.PHONY: crds
crds: venv ## regenerate crds/ (and the chart's CRD template) from the pydantic models
	$(PY) -m headroom.cli crd > crds/headroom.dev_scalingprofiles.yaml
	$(PY) hack/sync_chart.py

.PHONY: docs
docs: venv ## regenerate docs/api.md's tables that mirror code: every CRD field, the settings a profile may override, the binding's keys
	$(PY) hack/docs_tables.py

.PHONY: manifests
manifests: venv ## render manifests/operator.yaml and manifests/rbac.yaml from the Helm chart (helm template; helm is built when absent)
	$(PY) hack/sync_chart.py --manifests "$$(hack/build-helm.sh)"

.PHONY: golden
golden: venv ## regenerate the golden YAML, tests/golden/<example>[/<integration>]/<component>.yaml (review the diff!)
	HEADROOM_UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/unit -k golden

.PHONY: lint
lint: venv ## ruff, mypy --strict and the import-layer contracts
	$(VENV)/bin/ruff check operator tests hack bench
	$(VENV)/bin/ruff format --check operator tests hack bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: unit
unit: venv ## unit tests: planning, builders (golden YAML), CRD drift, CLI
	$(PY) -m pytest -q tests/unit

.PHONY: conformance
conformance: deps venv ## rendered configs in real pgbouncer/postgres/redis on 127.0.0.1
	$(PY) -m pytest -q tests/conformance

.PHONY: e2e
e2e: venv cluster ## end-to-end tests against the control plane
	KUBECONFIG=$(CLUSTER_KUBECONFIG) $(PY) -m pytest -q tests/e2e

.PHONY: floors
floors: deps venv ## unit + Postgres-client tests on the lowest dependency versions pyproject allows
	HEADROOM_CACHE=$(HEADROOM_CACHE) $(PY) hack/floors.py

.PHONY: test
test: deps venv cluster ## everything: lint, unit, conformance, e2e, dependency floors
	$(MAKE) lint
	KUBECONFIG=$(CLUSTER_KUBECONFIG) $(PY) -m pytest --durations=40 tests
	$(MAKE) floors

.PHONY: bench
bench: venv cluster ## benchmarks (pgbench through the poolers vs direct, read-pool eviction, planned vs measured chance of waiting for declared loads, a server shared by 20 profiles when a 21st arrives); results in bench/results/
	$(PY) bench/pooler_bench.py --out bench/results/pooler.md
	$(PY) bench/readpool_bench.py --out bench/results/readpool.md
	$(PY) bench/load_bench.py --out bench/results/load.md
	KUBECONFIG=$(CLUSTER_KUBECONFIG) $(PY) bench/shares_bench.py --out bench/results/shares.md

.PHONY: fuzz
fuzz: venv cluster ## fuzz the API: $(or $(EXAMPLES),10000) generated profiles judged by the model, the API server and the real programs; bench/results/fuzz.md
	KUBECONFIG=$(CLUSTER_KUBECONFIG) $(PY) bench/fuzz.py --examples $(or $(EXAMPLES),10000) --out bench/results/fuzz.md

# ($(or) splits at commas: a default with commas in it must be a variable)
SIZES ?= 50,50,50,100,500
SLOW_SIZES ?= 500

.PHONY: bench-scale
bench-scale: venv binaries ## N=50 (x3), 100 and 500 full-stack profiles, and 500 with slow dependencies, on a bench cluster (SIZES=, SLOW_SIZES= to choose); results in bench/results/scale.md
	$(PY) bench/scale_bench.py --sizes "$(SIZES)" --slow-sizes "$(SLOW_SIZES)" --out bench/results/scale.md

.PHONY: chaos
chaos: deps venv cluster ## 20 kill -9 of the operator over 100 profiles + a 60 s API server outage; results in bench/results/chaos.md
	rm -f bench/results/chaos.md
	KUBECONFIG=$(CLUSTER_KUBECONFIG) HEADROOM_CHAOS_PROFILES=100 HEADROOM_CHAOS_KILLS=20 \
	  HEADROOM_CHAOS_REPORT=$(CURDIR)/bench/results/chaos.md \
	  $(PY) -m pytest -q -s tests/e2e/test_reliability.py

.PHONY: run
run: venv cluster ## local control plane + CRDs + operator + example profile, then print its status
	KUBECONFIG=$(CLUSTER_KUBECONFIG) hack/run.sh

.PHONY: deploy
deploy: ## install CRD + operator manifests into $$KUBECONFIG's cluster (needs the image)
	kubectl apply --server-side -f crds/
	kubectl apply -k manifests/

.PHONY: render
render: venv ## render every example's child objects as YAML (no cluster needed; the app's pods taken as app=<its Deployment>)
	@for f in examples/*.yaml; do \
	  app=$$(awk '$$1 == "deployment:" {print $$2; exit}' $$f); \
	  echo "# --- $$f (app pods: app=$$app)"; \
	  $(PY) -m headroom.cli render $$f --app-selector app=$$app; \
	done
