# The two commands a new user needs: `make demo` and `make test`.
# Each does its own set-up: a virtualenv with the pinned tools, and mosquitto.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: setup demo test broker-bin clean bench-alloc bench-rnma bench-device

setup: $(VENV)/.installed broker-bin

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $@

# mosquitto is a real dependency of the demo and the tests: install it when missing.
broker-bin:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  echo "installing mosquitto (apt)"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto mosquitto-clients; }

demo: setup
	$(PY) -m capshard demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info host/*.egg-info .pytest_cache

# Benchmarks print their figures; each ends with one summary line.
bench-alloc: setup
	$(PY) tools/bench/bench_alloc.py

bench-rnma: setup
	$(PY) tools/bench/bench_rnma.py

bench-device: setup
	$(PY) tools/bench/bench_device.py
