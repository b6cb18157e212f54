# Pipeline Pulse: `make demo` and `make test` bootstrap .venv from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Tests run in this many processes: an end-to-end test keeps about one core busy (its
# worker), so two share 2 cores well. PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist worksteal --durations=12

.PHONY: dashboards manifests demo test quick unit e2e lint schemas bench backtest clean help prometheus-tools

help:
	@echo "make demo    embedded Kafka + Redis + worker, a year of history, live KPIs (Ctrl-C stops)"
	@echo "make test    lint, schema drift, unit and end-to-end tests on real embedded servers"
	@echo "             (in PYTEST_WORKERS=2 processes; 0 runs them in one)"
	@echo "make quick   make test without the slow fault-injection tests (marked slow)"
	@echo "make unit    unit tests only;  make e2e  end-to-end tests only"
	@echo "make schemas regenerate schemas/ from the pydantic models"
	@echo "make dashboards regenerate deploy/grafana/dashboards/ from stream_app/tools/dashboards.py"
	@echo "make manifests  regenerate deploy/kubernetes/generated/ (PrometheusRule, dashboard"
	@echo "             ConfigMaps) from deploy/prometheus/rules and the dashboards code"
	@echo "make bench   throughput, freshness, memory, recovery and scrape figures (~15 min;"
	@echo "             BENCH_ARGS='--events 20000 --open-deals 50000' for a quick run)"
	@echo "make backtest  the forecast's error at days 1, 8, 15, 22 of the month and weeks"
	@echo "             1-13 of the quarter against two baselines, on Maven CRM"
	@echo "             (../shared/datasets) and a generated stream"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,embedded]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stream-app demo

lint: $(STAMP)
	$(BIN)/ruff check stream_app tests bench
	$(BIN)/mypy
	$(BIN)/stream-app schemas --check

# promtool checks the alert and recording rules; as root, install Debian's packages.
prometheus-tools:
	@if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
	    || ! command -v docker-compose >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's prometheus, prometheus-alertmanager and docker-compose"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q prometheus prometheus-alertmanager docker-compose >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && \
	        apt-get install -y -q prometheus prometheus-alertmanager docker-compose >/dev/null; }; \
	  else \
	    echo "promtool or docker-compose not found: apt-get install prometheus"; \
	    echo "prometheus-alertmanager docker-compose (the rule and compose tests fail in CI"; \
	    echo "and as root without them, and skip otherwise)"; \
	  fi; \
	fi

test: lint prometheus-tools
	$(PYTEST)

quick: lint prometheus-tools
	$(PYTEST) -m "not slow"

unit: $(STAMP)
	$(PYTEST) tests/unit

e2e: $(STAMP)
	$(PYTEST) tests/integration

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

backtest: $(STAMP)
	$(BIN)/python -m bench.backtest $(BACKTEST_ARGS)

schemas: $(STAMP)
	$(BIN)/stream-app schemas

dashboards: $(STAMP)
	$(BIN)/stream-app dashboards

manifests: $(STAMP)
	$(BIN)/stream-app manifests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
