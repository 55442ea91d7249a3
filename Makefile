# simbdp: `make demo` and `make test` are all a fresh machine needs.
VENV   ?= .venv
PY      = $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test bench bench-quick bench-render clean

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

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

# needs PostgreSQL, RabbitMQ and NATS; one JSON per run in benchmarks/results/, then
# docs/benchmarks.md and docs/img/bench-*.png regenerated from it
bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks.suite
	$(PY) -m benchmarks.render

bench-quick: $(VENV)/.installed-bench  # reduced sizes: a few minutes
	$(PY) -m benchmarks.suite --quick
	$(PY) -m benchmarks.render

bench-render: $(VENV)/.installed-bench  # docs/benchmarks.md from the newest result
	$(PY) -m benchmarks.render

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
