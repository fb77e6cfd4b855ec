# make demo : simulate a small GMOS dataset, plan it, reduce it (stack and PNG under demo/results/science)
# make test : unit and workflow tests, then ruff
# make lint : ruff, snakefmt --check and snakemake --lint
# The first run creates .venv and installs gemred into it; later runs reuse it.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
CORES ?= 2
VENV := .venv
BIN := $(VENV)/bin
# Reinstall only when the package metadata changes (the install is editable).
STAMP := $(VENV)/.gemred-installed

DEMO := demo
DEMO_TABLE := $(DEMO)/datasets.tsv
DEMO_CONFIG := --config datasets=$(DEMO_TABLE) output_dir=$(DEMO)/results

.PHONY: help setup bytecode demo demo-data test lint

help:
	@echo "make demo   simulate a small GMOS dataset and reduce it into $(DEMO)/results"
	@echo "make test   run the tests (pytest -n 2) and ruff"
	@echo "make lint   ruff, snakefmt --check, snakemake --lint"

setup: bytecode

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { \
	  $(PYTHON) -m venv $(VENV) || { \
	    echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; \
	    exit 1; }; }
	$(BIN)/pip install --quiet -e '.[test,cluster]'
	touch $@

# gemred's own modules byte-compiled (an editable install leaves them as source): every workflow
# job imports them, and where PYTHONDONTWRITEBYTECODE is set each job would compile them again.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src/gemred

demo-data: $(STAMP)
	rm -rf $(DEMO)/raw
	$(BIN)/gemred simulate gmos-starfield --out $(DEMO)/raw --size small
	$(BIN)/gemred table $(DEMO)/raw -o $(DEMO_TABLE)

$(DEMO_TABLE):
	$(MAKE) demo-data

demo: demo-data bytecode
	@echo "== dataset table $(DEMO_TABLE) (main columns) =="
	@$(BIN)/python -c "import sys, pandas as pd; \
	  t = pd.read_csv(sys.argv[1], sep='\t'); \
	  print(t[['filename', 'role', 'group', 'observation_type', 'object', 'filter_name', \
	           'exposure_time']].to_string(index=False))" $(DEMO_TABLE)
	@echo "== planned jobs (dry run) =="
	$(BIN)/snakemake -n --cores $(CORES) $(DEMO_CONFIG)
	@echo "== running =="
	$(BIN)/snakemake --cores $(CORES) $(DEMO_CONFIG)
	@echo "== products (raw files in $(DEMO)/raw are untouched; logs in $(DEMO)/results/logs) =="
	@find $(DEMO)/results -name '*.fits' -o -name '*.png' | sort
	@for f in $(DEMO)/results/science/*_image.fits; do \
	  echo "stack: $$f   preview: $${f%.fits}.png"; done

test: bytecode
	$(BIN)/pytest -n 2 --dist loadfile -q
	$(BIN)/ruff check .

lint: $(STAMP) $(DEMO_TABLE)
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint $(DEMO_CONFIG)
