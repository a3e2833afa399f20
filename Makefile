# SeFAR toolkit — the set-up contract.
#   make quickstart   create .venv, install, run the whole pipeline on SynthGym, write a report
#   make test         create .venv if missing, install with [dev] through constraints.txt, run the fast tests
#   make test-slow    the tests marked slow
#   make bench        the benchmark suite (prints JSON)
#   make gpu-check    the tests marked cuda (4-bit, QLoRA, DeepSpeed ZeRO-2, FSDP, bf16); skipped without a GPU
#   make lock         refresh constraints.txt from .venv after an upgrade (README: "Reproducible installs")
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := constraints.txt

.PHONY: venv browser test test-slow quickstart bench gpu-check lock lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Every version comes from the lock, constraints.txt: what the test suite passed with (torch 2.14.1 and
# torchvision 0.29.1 among them, the builds this machine caches; see README).
$(STAMP): pyproject.toml $(LOCK) | $(PY)
	$(PY) -m pip install -c $(LOCK) -e ".[dev]"
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

# With a CUDA GPU: the [gpu] extra (DeepSpeed) too, then the tests marked cuda. Without one they are skipped,
# each with the reason; so is the DeepSpeed test when the extra does not install.
gpu-check: $(STAMP)
	$(PY) -m pip install -c $(LOCK) -e ".[dev,gpu]" \
	  || echo "gpu-check: the [gpu] extra (deepspeed) did not install; its test will be skipped"
	$(PY) -m pytest -q -m cuda tests/test_gpu.py

# Pins the versions installed in .venv now (never reinstalls first: an upgrade made by hand is what is locked).
lock: | $(STAMP)
	$(PY) scripts/lock_constraints.py --extras dev --out $(LOCK)

lint: $(STAMP)
	$(PY) -m ruff check sefar_encoder mllm gym_qa scripts tests

clean:
	rm -rf $(VENV) build *.egg-info
