# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llmb-installed

.PHONY: run test install clean bench

$(STAMP): pyproject.toml requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Trains the default CPU proxy (llama3.1 8b shrunk to cpu-small, bf16, 50 steps, GA 2; ~100 s here).
run: $(STAMP)
	$(BIN)/llmb run

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit $$?; done

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
