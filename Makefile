# Two entry points for a new user: `make demo` edits an image with the embedded model,
# `make test` runs the test suite. Both create the virtual environment on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# Test-only: the hosted API's own client, run unchanged against our server. It pins an old
	# Pillow it does not need, hence --no-deps (its one other need, requests, is already in).
	$(BIN)/pip install --quiet --no-deps blackforest==0.1.3
	# Only for its 320n.onnx (the image classifier's weights): --no-deps skips OpenCV, never imported.
	$(BIN)/pip install --quiet --no-deps nudenet==3.4.2
	rm -f $(VENV)/.installed-*
	touch $@

# The browser tests drive Debian's Chromium through Playwright (no browser can be downloaded on
# these machines). As root, apt installs it when it is missing; otherwise this says how, and the
# browser tests are skipped (CI requires them: .ci/run).
CHROMIUM := /usr/bin/chromium
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		$(APT) || { apt-get update -q >/dev/null && $(APT); }; \
	else \
		echo "note: no $(CHROMIUM): the browser tests will be skipped (sudo apt-get install chromium)"; \
	fi

install: $(STAMP) $(CHROMIUM)

demo: $(STAMP)
	$(BIN)/openkontext demo --out out/demo

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_transformer.py
