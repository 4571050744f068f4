# The two commands of the README: `make demo` and `make test`. Both make the virtual
# environment (.venv) and install what they need, so they work on a fresh clone.
PYTHON ?= python3
# The tests mostly wait on PostgreSQL and Mosquitto: two workers halve the suite's time on two
# cores; more only load the services (and time-bound tests) without going faster.
PYTEST_WORKERS ?= 2
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

# Said before it starts: the first install takes about a minute, and a silent minute looks
# like a hang.
$(STAMP): pyproject.toml
	@echo "Installing ColdTrail and its dependencies into $(VENV) (about a minute the first time)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)
	@echo "Installed."

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/coldtrail demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy coldtrail tests $(wildcard bench)

test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
