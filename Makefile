# The two commands a new user needs: `make demo` and `make test`.
# Each does its own set-up: a virtualenv with the pinned tools, and the real
# servers it drives (installed through apt when missing).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 3600
MINUTES ?= 10

.PHONY: setup system-deps test-deps demo test clean fuzz bench-alloc bench-rnma bench-device bench-codec bench-shards bench-e2e bench-fleet soak

setup: $(VENV)/.installed system-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $@

# Real servers, from Debian packages when missing: mosquitto for everything;
# PostgreSQL (fleet store) and FreeRADIUS (RADIUS auth shard) for the tests.
system-deps:
	@sh tools/setup/mosquitto.sh

test-deps:
	@sh tools/setup/postgresql.sh
	@sh tools/setup/freeradius.sh

demo: setup
	$(PY) -m capshard demo

test: setup test-deps
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

# The device's per-message hot paths (CBOR, HMAC, COSE verify) on both runtimes.
bench-codec: setup
	$(PY) tools/bench/bench_codec.py

# A fleet under churn, broker restarts and shard failures for MINUTES minutes.
soak: setup test-deps
	$(PY) tools/soak/soak.py --minutes $(MINUTES)

# Long fuzzing of every decoder (the bounded form runs in `make test`).
fuzz: setup
	$(PY) tools/fuzz/run.py --seconds $(FUZZ_SECONDS)

bench-shards: setup
	$(PY) tools/bench/bench_shards.py

bench-e2e: setup
	$(PY) tools/bench/bench_e2e.py

bench-fleet: setup test-deps
	$(PY) tools/bench/bench_fleet.py
