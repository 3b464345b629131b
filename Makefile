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

.PHONY: install run test bench serve airflow db-start db-stop clean help

help:
	@echo "make run    - set up, run the sitekb_refresh DAG on the demo site, print the snapshot and a search"
	@echo "make test   - set up and run the whole test suite"
	@echo "make bench  - run the benchmarks (tests/benchmarks), results in bench-results/"
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

bench: install
	$(BIN)/python -m pytest tests/benchmarks -q -p no:cacheprovider --timeout=3600 -o addopts="" -s

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
