# Two commands matter: `make demo` and `make test`. Both bootstrap .venv from constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-nightly lint typecheck check format bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m conveyor.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

PURE := src/conveyor/errors.py,src/conveyor/message.py,src/conveyor/names.py,src/conveyor/routing.py
PURE := $(PURE),src/conveyor/deaths.py,src/conveyor/brokers/group_state.py
PURE := $(PURE),src/conveyor/codecs.py,src/conveyor/cron.py,src/conveyor/retry.py,src/conveyor/worker/autoscale.py
PURE := $(PURE),src/conveyor/partitioner.py,src/conveyor/assignors.py,src/conveyor/events/windows/*.py

test: check
	$(BIN)/pytest -m "not slow" --cov --cov-report=term:skip-covered -q
	$(BIN)/coverage report --include='$(PURE)' --fail-under=100 > /dev/null \
		|| { $(BIN)/coverage report --include='$(PURE)' -m; exit 1; }

test-nightly: check
	$(BIN)/pytest -q

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

# The tasks suite's peers (Celery, RQ, Dramatiq, Huey, arq) come with the `bench` extra.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m bench queues
	$(BIN)/python -m bench tasks
	$(BIN)/python -m bench streams

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage
