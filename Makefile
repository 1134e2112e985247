# Federated Learning for Medical Imaging: build the book and test everything.
#
#   make book     install, execute every chapter, build the HTML book, print where to open it
#   make test     everything CI runs (.ci/run): lint, unit tests, notebook checks, the book, HTML
#   make help     every target
#
# Each stage of `make test` is a target of its own, so one can be rerun alone, e.g. `make nbval`
# after `make execute`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.NOTPARALLEL:

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
BUILD := _build
EXECUTED := $(BUILD)/executed
SMOKE := $(BUILD)/smoke
BOOK_SRC := $(BUILD)/book_src
HTML := $(BUILD)/html
BUILD_LOG := $(BUILD)/book_build.log
# Executed copies from a GPU run of the chapters, if one was made: their times join the
# "time to run" line of each chapter.
GPU_EXECUTED ?= $(BUILD)/executed-gpu
# Notebooks run side by side (each on one thread); seconds one cell may run.
JOBS ?= 2
CELL_TIMEOUT ?= 900
PORT ?= 8000

# The environment of every notebook run (papermill, nbval) and of the book build: plotly
# figures as self-contained HTML (its default JSON output is dropped by Jupyter Book 1) and one
# CPU thread, which makes reruns bit-for-bit identical.
export PLOTLY_RENDERER := notebook
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export OPENBLAS_NUM_THREADS := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_ROOT_USER_ACTION := ignore

INSTALLED := $(VENV)/.installed
PIP_INPUTS := requirements.txt requirements-book.txt requirements-dev.txt constraints-ci.txt \
	pyproject.toml

.PHONY: help install book serve test lint unit structure execute nbval smoke html html-check \
	screenshots chromium bench bench-flower bench-chapters bench-all results clean

help:
	@echo "make book        install, execute the chapters, build the HTML book ($(HTML))"
	@echo "make serve       serve $(HTML) on http://127.0.0.1:$(PORT)"
	@echo "make test        every check CI runs, in this order:"
	@echo "  make lint        ruff check ."
	@echo "  make unit        pytest tests/ (package unit tests)"
	@echo "  make structure   pytest tests/test_notebook_structure.py (chapter sources)"
	@echo "  make execute     papermill, book parameters -> $(EXECUTED)/"
	@echo "  make nbval       re-execute $(EXECUTED)/ and compare every output"
	@echo "  make smoke       papermill, ci/smoke/<chapter>.yaml parameters -> $(SMOKE)/"
	@echo "  make html        strict Jupyter Book build from $(EXECUTED)/ -> $(HTML)/"
	@echo "  make html-check  headless Chromium checks of the pages in $(HTML)/"
	@echo "make screenshots html-check, plus full-page screenshots at 390 and 1280 px in $(BUILD)/pages/"
	@echo "make install     create $(VENV) and install fedlib with the pinned toolchain"
	@echo "make bench       speed figures -> benchmarks/results.json (~10 min on 2 cores;"
	@echo "                 BENCH_ARGS=--full adds 10,000 clients for every method: longer)"
	@echo "make bench-flower  fedlib vs Flower's simulation engine (Ray), in $(FLOWER_VENV)/"
	@echo "make bench-chapters  execute the chapters, record time and peak memory of each"
	@echo "make bench-all   bench --full, bench-flower, bench-chapters: the figures of the book's"
	@echo "                 benchmark page (notebooks/93_benchmarks.ipynb)"
	@echo "make results     run results/default.json (resumable) and publish results/default/"
	@echo "make clean       remove $(BUILD)/"

# --- environment -----------------------------------------------------------------------------

$(INSTALLED): $(PIP_INPUTS)
	@test -x $(PY) || { echo "Creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q -c constraints-ci.txt -r requirements-dev.txt
	$(PY) -m pip install -q -e . --no-deps
	@touch $@

install: $(INSTALLED)

# Debian's Chromium for the page checks; installed when missing and we are root (as in CI).
chromium:
	@if [ -n "$${CHROMIUM:-}" ]; then \
		echo "chromium: $$CHROMIUM (from CHROMIUM)"; \
	elif command -v chromium >/dev/null 2>&1; then \
		echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium (about 480 MB)..."; \
		apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		command -v chromium; \
	else \
		echo "error: the HTML checks need Chromium. Install it first, e.g. 'sudo apt-get install chromium' (Debian) or set CHROMIUM=/path/to/chromium." >&2; \
		exit 1; \
	fi

# --- the book --------------------------------------------------------------------------------

book: install execute html
	@echo
	@echo "The book is ready: file://$(abspath $(HTML))/index.html"
	@echo "(or run 'make serve' and open http://127.0.0.1:$(PORT)/)"

serve:
	@test -f $(HTML)/index.html || { echo "No $(HTML)/index.html yet: run 'make book' first." >&2; exit 1; }
	$(PY) -m http.server $(PORT) --bind 127.0.0.1 --directory $(HTML)

# --- test stages -----------------------------------------------------------------------------

test: install chromium
	$(MAKE) --no-print-directory lint unit structure execute nbval smoke html html-check
	@echo "make test: all stages passed."

lint: install
	$(BIN)/ruff check .

unit: install
	$(PY) -m pytest tests --ignore=tests/test_notebook_structure.py -p no:cacheprovider

structure: install
	$(PY) -m pytest tests/test_notebook_structure.py -p no:cacheprovider

execute: install
	$(PY) ci/execute_notebooks.py --out $(EXECUTED) --jobs $(JOBS) --timeout $(CELL_TIMEOUT)

nbval: install
	$(PY) ci/run_nbval.py $(EXECUTED) --jobs $(JOBS) --timeout $(CELL_TIMEOUT)

smoke: install
	$(PY) ci/execute_notebooks.py --out $(SMOKE) --params-dir ci/smoke --jobs $(JOBS) \
		--timeout $(CELL_TIMEOUT)

# Strict build (-W -n: any warning fails) of a staged source folder that holds the executed
# copies; the log is kept for html-check, which looks for figures dropped by the build.
html: install
	$(PY) ci/stage_book.py --executed $(EXECUTED) --dest $(BOOK_SRC) \
		$(if $(wildcard $(GPU_EXECUTED)/*.ipynb),--gpu-executed $(GPU_EXECUTED))
	rm -rf $(HTML) $(BUILD)/.doctrees
	$(BIN)/jupyter-book build -W -n --keep-going --path-output . $(BOOK_SRC) 2>&1 | tee $(BUILD_LOG)

html-check: install chromium
	$(PY) -m pytest ci/test_book_html.py -p no:cacheprovider

screenshots: install chromium
	BOOK_SCREENSHOTS=1 $(PY) -m pytest ci/test_book_html.py -p no:cacheprovider

# --- benchmarks (figures, not tests) -> benchmarks/results.json -------------------------------

BENCH_ARGS ?=
bench: install
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# Flower's simulation extra (Ray, ~220 MB) stays out of the reader's install and of CI: a venv
# of its own, with the CPU build of torch (constraints-ci.txt).
FLOWER_VENV ?= .venv-flower
$(FLOWER_VENV)/.installed: requirements.txt constraints-ci.txt pyproject.toml
	@test -x $(FLOWER_VENV)/bin/python || { echo "Creating $(FLOWER_VENV)"; $(PYTHON) -m venv $(FLOWER_VENV); }
	$(FLOWER_VENV)/bin/python -m pip install -q -c constraints-ci.txt -r requirements.txt \
		"flwr[simulation]==1.42.0"
	$(FLOWER_VENV)/bin/python -m pip install -q -e . --no-deps
	@touch $@

bench-flower: $(FLOWER_VENV)/.installed
	$(FLOWER_VENV)/bin/python benchmarks/flower_sim.py

# Each chapter in book mode (papermill records the time, ci/run_papermill.py the kernel's peak
# memory), then collected into the record, failed chapters marked as such (the target fails).
bench-chapters: install
	$(PY) ci/execute_notebooks.py --out $(EXECUTED) --jobs $(JOBS) --timeout $(CELL_TIMEOUT) \
		|| status=$$?; \
	$(PY) benchmarks/chapters.py --executed $(EXECUTED) --jobs $(JOBS); exit $${status:-0}

# Everything the benchmark page shows, the scale series up to 10,000 clients for every method.
bench-all: install
	$(MAKE) --no-print-directory bench BENCH_ARGS="--full $(BENCH_ARGS)"
	$(MAKE) --no-print-directory bench-flower
	$(MAKE) --no-print-directory bench-chapters

# The results appendix (notebooks/92_results.ipynb): run the default grid into $(BUILD) (an
# interrupted run continues where it stopped), then copy its table and a record of the machine
# to results/default/, the files the appendix reads.
RESULTS_GRID ?= results/default.json
RESULTS_OUT ?= $(BUILD)/results/default
RESULTS_DEST ?= results/default

results: install
	$(PY) -m fedlib grid $(RESULTS_GRID) --out $(RESULTS_OUT)
	$(PY) -m fedlib.grid publish $(RESULTS_OUT) $(RESULTS_DEST) --grid $(RESULTS_GRID)

clean:
	rm -rf $(BUILD)
