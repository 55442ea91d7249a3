# simbdp: `make demo` and `make test` are all a fresh machine needs.
VENV   ?= .venv
PY      = $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/simbdp demo

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest -q

bench: $(VENV)/.installed-test  # needs the servers; figures go in docs/benchmarks.md
	$(PY) -m benchmarks.bench_batch_ingest
	$(PY) -m benchmarks.bench_small_files
	$(PY) -m benchmarks.bench_stream_ingest
	$(PY) -m benchmarks.bench_api

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
