# SeFAR toolkit — the set-up contract.
#   make quickstart   create .venv, install, run the whole pipeline on SynthGym, write a report
#   make test         create .venv if missing, install with [dev], run the default (fast) test suite
#   make test-slow    the tests marked slow
#   make bench        the benchmark suite (prints JSON)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv browser test test-slow quickstart bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# torch/torchvision are pinned first so pip takes the builds this machine caches (see README).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# The browser test drives Debian's Chromium (never a downloaded one). Installing it needs root and the Debian
# mirror; when either is missing the test is skipped and prints why.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "browser: could not install Debian chromium; the browser test will be skipped"; \
	  else echo "browser: no root/apt-get to install chromium; the browser test will be skipped"; fi; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

quickstart: $(STAMP)
	$(PY) scripts/quickstart.py

bench: $(STAMP)
	$(PY) scripts/bench.py

lint: $(STAMP)
	$(PY) -m ruff check sefar_encoder mllm gym_qa scripts tests

clean:
	rm -rf $(VENV) build *.egg-info
