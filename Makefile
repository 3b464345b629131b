# sitekb: the two commands a new user needs are `make run` and `make test`.
# Both create .venv and install sitekb on first use; nothing else is needed but
# Python 3.11, pip and the OS.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sitekb-installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export GX_ANALYTICS_ENABLED := false

.PHONY: install run test test-distributed bench bench-peers serve airflow db-start db-stop clean help

help:
	@echo "make run    - set up, run the demo site's DAG (sitekb_demo) in Airflow, print the snapshot and a search"
	@echo "make test   - set up and run the whole test suite"
	@echo "make test-distributed - only the CeleryExecutor test: Redis, two Celery workers, mapped embed tasks"
	@echo "make bench  - run the benchmarks (tests/benchmarks), results in bench-results/"
	@echo "make bench-peers - install the peers the snapshot benchmark compares with (llama-index, langchain)"
	@echo "make serve  - start the HTTP API on 127.0.0.1:8000"
	@echo "make airflow - start Airflow (standalone) with the sitekb DAGs on 127.0.0.1:8080"
	@echo "make clean  - remove the virtual environment and local state (.sitekb/)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/sitekb run demo --engine airflow

test: install
	$(BIN)/python -m pytest

# Part of `make test` too; skipped (and says why) without Debian's redis-server.
test-distributed: install
	$(BIN)/python -m pytest tests/distributed -q

bench: install
	$(BIN)/python -m pytest tests/benchmarks -q -p no:cacheprovider --timeout=3600 -o addopts="" -s

# langchain-postgres pins pgvector<0.4 while sitekb needs 0.5: it is installed without its pins.
bench-peers: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m pip install --quiet --no-deps 'langchain-postgres>=0.0.15'
	$(BIN)/python -m pip install --quiet 'langchain-core>=0.3' 'pgvector>=0.5,<0.6'

serve: install
	$(BIN)/sitekb serve

airflow: install
	$(BIN)/sitekb airflow standalone

db-start: install
	$(BIN)/sitekb db start

db-stop: install
	$(BIN)/sitekb db stop

clean:
	-$(BIN)/sitekb db stop
	rm -rf $(VENV) .sitekb
